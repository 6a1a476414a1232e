"""Per-user rate limits (requests/minute, requests/day, tokens/day), shared by every web process.

The algorithm is GCRA (the generic cell rate algorithm): each limit is one stored number, the "theoretical
arrival time" (TAT). A limit of L per period T lets a request of cost c through when
max(TAT, now) + c*T/L - now <= T, which behaves as a sliding window: bursts up to L, then one unit every T/L.
Several limits are checked and taken together, all or nothing, in one Lua script: one Redis round trip per
request, plus one at settlement to give back the unused part of the tokens taken. The clock is Redis's own
(TIME), so web processes with skewed clocks share one view. When the prompt cache lives in the same Redis,
its lookup rides along with the take and its write with the give-back (`read=`, `write=`): the gate and the
settlement then cost two Redis round trips in all, not four (docs/performance.md).

The store is the "limits" cache alias: Redis through django-redis in production (I5), process memory only
in the embedded default (one process). If Redis cannot be reached, LimitsUnavailable is raised and the caller
refuses the request (I8).
"""

import asyncio
import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass

from django.core.cache import caches
from django_redis.cache import RedisCache
from redis.exceptions import RedisError

from aisaas.loop_redis import LoopRedis, Script

LIMITS_ALIAS = "limits"

logger = logging.getLogger(__name__)


class LimitsUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Limit:
    name: str  # requests_per_minute, requests_per_day, tokens_per_day
    key: str
    limit: int
    period_seconds: int
    cost: int


@dataclass(frozen=True)
class LimitResult:
    allowed: bool
    limit: Limit | None  # the limit that refused, if any
    remaining: int  # of the refusing limit (or of the first limit when allowed)
    retry_after_seconds: float  # 0 when allowed
    now: float  # the store's clock, epoch seconds
    read: bytes | None = None  # the value at take(read=key), if allowed and the key exists
    first_whole_after_seconds: float = 0.0  # when allowed: until the first limit has all of its allowance back


@dataclass(frozen=True)
class RawWrite:
    """A plain SET of another Redis key, sent with a give-back (the prompt cache's new answer)."""

    key: str  # the store's own key (prefix included)
    value: bytes
    ttl_ms: int


# KEYS: one per limit, then optionally a key to read once the limits are taken. ARGV: three per limit.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new_tats = {}
local first_remaining = 0
local count = #ARGV / 3
for i = 1, count do
  local period = tonumber(ARGV[3 * i - 2])
  local interval = period / tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0)
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  if new_tat - now > period then
    local remaining = math.floor((period - (tat - now)) / interval)
    return {0, i, remaining, math.ceil(new_tat - now - period), now}
  end
  new_tats[i] = new_tat
  if i == 1 then first_remaining = math.floor((period - (new_tat - now)) / interval) end
end
for i = 1, count do
  redis.call('SET', KEYS[i], string.format('%.3f', new_tats[i]), 'PX', math.ceil(new_tats[i] - now) + 1000)
end
local read = false
if #KEYS > count then read = redis.call('GET', KEYS[count + 1]) end
return {1, 0, first_remaining, math.ceil(new_tats[1] - now), now, read}
"""

# KEYS[1]: the limit, ARGV[1]: the amount to give back (ms of its schedule; 0: none). ARGV[2]: how long (ms)
# KEYS[2] marks this give-back as done (0: no marker): a second give-back with the same marker does nothing.
# Optionally, the next key and ARGV[3], ARGV[4]: a key to SET to a value with a time to live (ms).
_GIVE_BACK = """
local next_key = 2
if tonumber(ARGV[2]) > 0 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 0 end
  next_key = 3
end
local amount = tonumber(ARGV[1])
if amount > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]))
  if tat then
    redis.call('SET', KEYS[1], string.format('%.3f', tat - amount), 'KEEPTTL')
  end
end
if #KEYS >= next_key then redis.call('SET', KEYS[next_key], ARGV[3], 'PX', ARGV[4]) end
return 1
"""

# The scripts with their SHA1, for EVALSHA from the event loop (aisaas.loop_redis); RedisLimiter registers them
# on its own client.
_TAKE_SCRIPT, _GIVE_BACK_SCRIPT = Script(_TAKE), Script(_GIVE_BACK)

# How long a give-back marked `once_for` a request is remembered: far longer than a settlement's retries.
ONCE_FOR_SECONDS = 600


def _limit_key(cache: RedisCache, key: str) -> str:
    return cache.make_key(f"limit:{key}")


def _take_call(cache: RedisCache, limits: list[Limit], read: str | None) -> tuple[list, list]:
    """The take script's KEYS and ARGV."""
    args = []
    for limit in limits:
        args += [limit.period_seconds * 1000, limit.limit, limit.cost]
    return [_limit_key(cache, limit.key) for limit in limits] + ([read] if read else []), args


def _give_back_call(
    cache: RedisCache, limit: Limit, amount: int, write: RawWrite | None, once_for: str | None
) -> tuple[list, list]:
    """The give-back script's KEYS and ARGV."""
    amount_ms = max(0, amount) * limit.period_seconds * 1000 / limit.limit
    keys, args = [_limit_key(cache, limit.key)], [amount_ms, ONCE_FOR_SECONDS * 1000 if once_for else 0]
    if once_for:
        keys.append(_limit_key(cache, f"given-back:{once_for}"))
    if write is not None:
        keys.append(write.key)
        args += [write.value, write.ttl_ms]
    return keys, args


def _take_result(limits: list[Limit], reply: list) -> LimitResult:
    # The fourth value is in ms: until the refusing limit would let the request through, or when all were taken,
    # until the first one is whole again.
    allowed, index, remaining, wait_ms, now_ms, *value = reply
    return LimitResult(
        allowed=bool(allowed),
        limit=None if allowed else limits[index - 1],
        remaining=remaining,
        retry_after_seconds=0.0 if allowed else wait_ms / 1000,
        now=now_ms / 1000,
        read=value[0] if value and value[0] else None,
        first_whole_after_seconds=wait_ms / 1000 if allowed else 0.0,
    )


class RedisLimiter:
    def __init__(self, cache: RedisCache):
        self.cache = cache
        client = cache.client.get_client(write=True)
        self.take_script = client.register_script(_TAKE)
        self.give_back_script = client.register_script(_GIVE_BACK)

    def take(self, limits: list[Limit], *, read: str | None = None) -> LimitResult:
        """Take all `limits` or none; if they are taken, also GET `read` (a key of this store) in the same
        round trip."""
        keys, args = _take_call(self.cache, limits, read)
        try:
            return _take_result(limits, self.take_script(keys=keys, args=args))
        except RedisError as error:
            raise LimitsUnavailable(str(error)) from error

    def give_back(
        self, limit: Limit, amount: int, *, write: RawWrite | None = None, once_for: str | None = None
    ) -> None:
        """Give back `amount` of what `limit` took; also SET `write` in the same round trip. With `once_for` (a
        request id), only the first give-back for that request counts."""
        keys, args = _give_back_call(self.cache, limit, amount, write, once_for)
        try:
            self.give_back_script(keys=keys, args=args)
        except RedisError as error:
            raise LimitsUnavailable(str(error)) from error


class LocalLimiter:
    """The same algorithm in process memory, for the embedded default's single process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tats: dict[str, float] = {}
        self.given_back: dict[str, float] = {}  # once_for -> when it is forgotten (insertion order: oldest first)

    # `read` and `write` ride along only with a Redis store (store_shared_with): never given here.
    def take(self, limits: list[Limit], *, read: None = None) -> LimitResult:
        with self.lock:
            now = time.time()
            new_tats, first_remaining = [], 0
            for position, limit in enumerate(limits):
                interval = limit.period_seconds / limit.limit
                tat = max(self.tats.get(limit.key, now), now)
                new_tat = tat + limit.cost * interval
                if new_tat - now > limit.period_seconds:
                    return LimitResult(
                        False,
                        limit,
                        math.floor((limit.period_seconds - (tat - now)) / interval),
                        new_tat - now - limit.period_seconds,
                        now,
                    )
                new_tats.append(new_tat)
                if position == 0:
                    first_remaining = math.floor((limit.period_seconds - (new_tat - now)) / interval)
            for limit, new_tat in zip(limits, new_tats, strict=True):
                self.tats[limit.key] = new_tat
            return LimitResult(True, None, first_remaining, 0.0, now, first_whole_after_seconds=new_tats[0] - now)

    def give_back(self, limit: Limit, amount: int, *, write: None = None, once_for: str | None = None) -> None:
        with self.lock:
            if once_for is not None:
                now = time.time()
                while self.given_back and next(iter(self.given_back.values())) < now:
                    self.given_back.pop(next(iter(self.given_back)))
                if once_for in self.given_back:
                    return
                self.given_back[once_for] = now + ONCE_FOR_SECONDS
            if limit.key in self.tats:
                self.tats[limit.key] -= amount * limit.period_seconds / limit.limit


_local = LocalLimiter()
# One RedisLimiter per cache object (a thread's django-redis client, renewed when the settings change): its
# scripts are registered once, not before every request.
_redis_limiters: "weakref.WeakKeyDictionary[RedisCache, RedisLimiter]" = weakref.WeakKeyDictionary()


def limiter() -> RedisLimiter | LocalLimiter:
    cache = caches[LIMITS_ALIAS]
    if not isinstance(cache, RedisCache):
        return _local
    if cache not in _redis_limiters:
        try:
            _redis_limiters[cache] = RedisLimiter(cache)
        except RedisError as error:
            raise LimitsUnavailable(str(error)) from error
    return _redis_limiters[cache]


# The limits' scripts on each event loop's own Redis client (aisaas.loop_redis), for the gate and the settlement
# running on the loop (usage.services.gate_pass_on_loop, usage_settle_on_loop): the same scripts and keys as
# RedisLimiter.
_loop_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()


def _client_on_loop(cache: RedisCache) -> LoopRedis:
    """This event loop's own client of the limits' Redis."""
    per_loop = _loop_clients.setdefault(asyncio.get_running_loop(), {})
    location = (cache._server if isinstance(cache._server, str) else cache._server[0]).split(",")[0]
    if location not in per_loop:
        options = cache._params.get("OPTIONS", {})
        per_loop[location] = LoopRedis(
            location, connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT"), timeout=options.get("SOCKET_TIMEOUT")
        )
    return per_loop[location]


def take_soon(limits: list[Limit], *, read: str | None = None) -> asyncio.Future:
    """limiter().take from the event loop, as a future of its LimitResult (failing with LimitsUnavailable): on
    the loop's own Redis client, the script sent in the loop's next turn (LoopRedis.script_soon), or at once
    in process memory (the embedded default: no I/O)."""
    cache = caches[LIMITS_ALIAS]
    if not isinstance(cache, RedisCache):
        return _resolved(_local.take(limits))
    keys, args = _take_call(cache, limits, read)
    return _converted(_client_on_loop(cache).script_soon(_TAKE_SCRIPT, keys, args), lambda r: _take_result(limits, r))


async def take_on_loop(limits: list[Limit], *, read: str | None = None) -> LimitResult:
    """limiter().take from async code without a thread (take_soon, awaited)."""
    return await take_soon(limits, read=read)


def _resolved(value) -> asyncio.Future:
    """A future of the running loop that already has `value` (the local store answers without I/O)."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _converted(reply: asyncio.Future, convert) -> asyncio.Future:
    """A future of convert(what `reply` gives), failing with LimitsUnavailable where `reply` fails with a Redis
    or socket error."""
    converted = asyncio.get_running_loop().create_future()

    def done(reply: asyncio.Future) -> None:
        if converted.done():
            return
        if reply.cancelled():
            converted.cancel()
        elif isinstance(reply.exception(), RedisError | OSError):
            converted.set_exception(LimitsUnavailable(str(reply.exception())))
        elif reply.exception() is not None:
            converted.set_exception(reply.exception())
        else:
            converted.set_result(convert(reply.result()))

    reply.add_done_callback(done)
    return converted


def store_shared_with(cache) -> bool:
    """Whether `cache` is the limits' own Redis (same server and database), so that reads and writes of its
    keys can ride along with the limits' scripts (take(read=), give_back(write=))."""
    own = caches[LIMITS_ALIAS]
    return isinstance(own, RedisCache) and isinstance(cache, RedisCache) and cache._server == own._server


def give_back_quietly(limit: Limit, amount: int, *, write: RawWrite | None = None) -> None:
    """Give back part of what a request took (and do `write`, see store_shared_with). If the store cannot be
    reached the limit stays stricter than it should until its window passes; never looser, so this only
    logs."""
    if amount <= 0 and write is None:
        return
    try:
        limiter().give_back(limit, amount, write=write)
    except LimitsUnavailable:
        logger.warning("Could not give back %s to the %s limit", amount, limit.name)


def give_back_soon(
    limit: Limit, amount: int, *, write: RawWrite | None = None, once_for: str | None = None
) -> asyncio.Future:
    """give_back_quietly from the event loop without a thread, as a future that never fails (a failure is
    logged): on the loop's own Redis client, the script sent in the loop's next turn (as take_soon). With
    `once_for` (a request id), only the first give-back for that request counts: a settlement may be retried."""
    if amount <= 0 and write is None:
        return _resolved(None)
    cache = caches[LIMITS_ALIAS]
    if not isinstance(cache, RedisCache):
        _local.give_back(limit, amount, once_for=once_for)
        return _resolved(None)
    keys, args = _give_back_call(cache, limit, amount, write, once_for)
    given = asyncio.get_running_loop().create_future()

    def done(reply: asyncio.Future) -> None:
        if not reply.cancelled() and reply.exception() is not None:
            logger.warning("Could not give back %s to the %s limit: %s", amount, limit.name, reply.exception())
        if not given.done():
            given.set_result(None)

    _client_on_loop(cache).script_soon(_GIVE_BACK_SCRIPT, keys, args).add_done_callback(done)
    return given


def take_undo_quietly(taken: list[Limit]) -> None:
    """Give back all of a take (each limit's cost), as give_back_quietly does: for a request that was let
    through and then turned away before anything was spent."""
    for limit in taken:
        give_back_quietly(limit, limit.cost)

"""Per-user rate limits (requests/minute, requests/day, tokens/day), shared by every web process.

The algorithm is GCRA (the generic cell rate algorithm): each limit is one stored number, the "theoretical
arrival time" (TAT). A limit of L per period T lets a request of cost c through when
max(TAT, now) + c*T/L - now <= T, which behaves as a sliding window: bursts up to L, then one unit every T/L.
Several limits are checked and taken together, all or nothing, in one Lua script: one Redis round trip per
request, plus one at settlement to give back the unused part of the tokens taken. The clock is Redis's own
(TIME), so web processes with skewed clocks share one view (I5). The prompt cache lives in the same Redis: its
lookup rides along with the take and its write with the give-back (`read=`, `write=`), so the gate and the
settlement cost two Redis round trips in all, not four (docs/performance.md).

The store is LIMITS_REDIS_URL (REDIS_URL unless set), through redis-py's asyncio client, one per event loop. If
Redis cannot be reached, LimitsUnavailable is raised and the caller refuses the request (I8).
"""

import asyncio
import logging
import weakref
from dataclasses import dataclass

import redis.asyncio
from django.conf import settings
from redis.exceptions import RedisError

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
    # Until a limit has all of its allowance back: when allowed, the first limit; when refused, the refusing one.
    whole_after_seconds: float = 0.0


@dataclass(frozen=True)
class RawWrite:
    """A plain SET of another Redis key, sent with a give-back (the prompt cache's new answer)."""

    key: str  # the store's own key (store_key)
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
    return {0, i, remaining, math.ceil(new_tat - now - period), now, false, math.ceil(tat - now)}
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

# How long a give-back marked `once_for` a request is remembered: far longer than a settlement's retries.
ONCE_FOR_SECONDS = 600


def store_key(name: str) -> str:
    """A key of the limits' Redis, under the project's prefix (CACHE_KEY_PREFIX)."""
    return f"{settings.CACHE_KEY_PREFIX}:{name}"


def _limit_key(key: str) -> str:
    return store_key(f"limit:{key}")


@dataclass(frozen=True)
class _Store:
    """The limits' Redis for one event loop, with the scripts registered on it (EVALSHA, loaded on NOSCRIPT)."""

    url: str
    client: redis.asyncio.Redis
    take: object
    give_back: object


# redis-py's asyncio connections belong to the loop they were opened on (a server has one loop; the tests run a
# loop per test).
_stores: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Store]" = weakref.WeakKeyDictionary()


def _store() -> _Store:
    loop = asyncio.get_running_loop()
    url, store = settings.LIMITS_REDIS_URL, _stores.get(loop)
    if store is None or store.url != url:  # a new loop, or the setting changed (tests)
        timeout = settings.LIMITS_REDIS_TIMEOUT_SECONDS
        client = redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        store = _stores[loop] = _Store(url, client, client.register_script(_TAKE), client.register_script(_GIVE_BACK))
    return store


def store_client() -> redis.asyncio.Redis:
    """This event loop's client of the limits' Redis, for the plain commands other modules send there."""
    return _store().client


async def store_close() -> None:
    """Close this event loop's client, for code that ends a loop it made (the tests, bench/)."""
    store = _stores.pop(asyncio.get_running_loop(), None)
    if store is not None:
        await store.client.aclose()


def _take_result(limits: list[Limit], reply: list) -> LimitResult:
    # The fourth value is in ms: until the refusing limit would let the request through, or when all were taken,
    # until the first one is whole again. A refusal adds (after an empty read) until the refusing one is whole.
    allowed, index, remaining, wait_ms, now_ms, *value = reply
    return LimitResult(
        allowed=bool(allowed),
        limit=None if allowed else limits[index - 1],
        remaining=remaining,
        retry_after_seconds=0.0 if allowed else wait_ms / 1000,
        now=now_ms / 1000,
        read=value[0] if value and value[0] else None,
        whole_after_seconds=(wait_ms if allowed else value[1]) / 1000,
    )


async def take(limits: list[Limit], *, read: str | None = None) -> LimitResult:
    """Take all `limits` or none; if they are taken, also GET `read` (a store_key) in the same round trip."""
    keys = [_limit_key(limit.key) for limit in limits] + ([read] if read else [])
    args = []
    for limit in limits:
        args += [limit.period_seconds * 1000, limit.limit, limit.cost]
    try:
        return _take_result(limits, await _store().take(keys=keys, args=args))
    except (RedisError, OSError) as error:
        raise LimitsUnavailable(str(error)) from error


async def give_back(limit: Limit, amount: int, *, write: RawWrite | None = None, once_for: str | None = None) -> None:
    """Give back `amount` of what `limit` took, and SET `write` in the same round trip. With `once_for` (a request
    id), only the first give-back for that request counts: a settlement may be retried. If the store cannot be
    reached the limit stays stricter than it should until its window passes, never looser, so a failure is only
    logged."""
    if amount <= 0 and write is None:
        return
    amount_ms = max(0, amount) * limit.period_seconds * 1000 / limit.limit
    keys, args = [_limit_key(limit.key)], [amount_ms, ONCE_FOR_SECONDS * 1000 if once_for else 0]
    if once_for:
        keys.append(_limit_key(f"given-back:{once_for}"))
    if write is not None:
        keys.append(write.key)
        args += [write.value, write.ttl_ms]
    try:
        await _store().give_back(keys=keys, args=args)
    except (RedisError, OSError) as error:
        logger.warning("Could not give back %s to the %s limit: %s", amount, limit.name, error)

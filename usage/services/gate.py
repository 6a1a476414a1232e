"""The gate in front of every paid call: rate limits -> spend cap -> quota reservation -> prompt cache
lookup, then moderation (async), all before anything is sent to the completion model."""

import asyncio
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection
from django.db.models.expressions import Col
from django.utils import timezone

from aisaas.db import (
    LoopDatabaseError,
    database_vendor,
    db_datetime,
    in_db_thread,
    loop_execute,
    loop_fetchone,
    loop_queries_supported,
)
from aisaas.errors import ServiceUnavailable
from aisaas.users.models import ApiKey, User
from chat.llm import moderation_categories
from usage import limits, prompt_cache
from usage.errors import AccountSuspended, ContentFlagged, LimitReached
from usage.models import ModerationEvent, Plan, QuotaPeriod
from usage.services.periods import (
    quota_period_current,
    quota_refuse,
    quota_release_statement,
    quota_reservation_release,
    quota_reserve,
    quota_reserve_found_by,
    quota_reserve_statement,
)
from usage.services.plans import user_plan_create
from usage.services.spend import spend_cap_reached, spend_check
from usage.tokens import prompt_tokens_upper_bound

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RateLimitState:
    """A limit's state once an admitted request took its share: what the API tells a client in its
    X-RateLimit-* headers, so that it can pace itself before it is refused."""

    limit: int
    remaining: int
    reset_at: float  # epoch seconds: when all of the allowance is back


@dataclass(frozen=True)
class Admission:
    """A request the gate let through, with what it holds until it is settled or released."""

    request_id: str
    api_key_id: int | None  # the API key the call came with (None: the chat page)
    user_id: int
    source: str
    model: str
    max_tokens: int
    period_id: int
    period_end: datetime
    reserved_tokens: int
    tokens_limit: limits.Limit
    cache_key: str | None
    cached_answer: dict | None
    admitted_at: float  # time.monotonic(), for the record's latency
    requests_per_minute: RateLimitState  # the limit a busy client meets first


def _limits_for(*, user_id: int, plan: Plan, tokens: int) -> list[limits.Limit]:
    # Requests per minute first: the take reports the first limit's state (Admission.requests_per_minute).
    return [
        limits.Limit("requests_per_minute", f"{user_id}:rpm", plan.requests_per_minute, 60, 1),
        limits.Limit("requests_per_day", f"{user_id}:rpd", plan.requests_per_day, 86400, 1),
        limits.Limit("tokens_per_day", f"{user_id}:tpd", plan.tokens_per_day, 86400, tokens),
    ]


_LIMIT_MESSAGES = {
    "requests_per_minute": "You are sending messages too fast.",
    "requests_per_day": "You have reached today's message limit.",
    "tokens_per_day": "You have reached today's token limit.",
}


@dataclass(frozen=True)
class GateState:
    """What the gate needs to know about a user and the service, read in one query."""

    plan: Plan
    period: QuotaPeriod | None  # None: the current period does not exist yet
    spent_today: Decimal
    spent_this_month: Decimal
    daily_cap: Decimal | None  # staff overrides (SpendControl); None: the setting
    monthly_cap: Decimal | None
    kill_switch: bool
    suspended: bool = False  # staff suspended the user's paid calls


# The plan's columns come first, then the state's (_STATE_COLUMNS), then the holder's: who is asking, found by
# the user's id (the chat) or by an API key's hash (the API: the key is checked in this same query).
_GATE_STATE_SQL = """
    SELECT {plan_columns},
           q.id AS period_id, q.start AS period_start, q."end" AS period_end,
           q.allowance AS period_allowance, q.used AS period_used, q.reserved AS period_reserved,
           (SELECT COALESCE(SUM(s.cost), 0) FROM usage_spendday s WHERE s.day >= %s) AS spent_this_month,
           (SELECT COALESCE(SUM(s.cost), 0) FROM usage_spendday s WHERE s.day = %s) AS spent_today,
           c.daily_cap_usd AS daily_cap, c.monthly_cap_usd AS monthly_cap, c.kill_switch AS kill_switch,
           up.suspended_at AS suspended_at{holder_columns}
    FROM {holder}
    LEFT JOIN usage_plan p ON p.id = up.plan_id
    LEFT JOIN usage_quotaperiod q ON q.user_id = up.user_id AND q.start <= %s AND q."end" > %s
    LEFT JOIN usage_spendcontrol c ON c.id = (SELECT MIN(id) FROM usage_spendcontrol)
    WHERE {holder_is}
    ORDER BY q.start DESC
    LIMIT 1
"""
_STATE_COLUMNS = 12


@functools.cache
def _gate_state_sql(by_api_key: bool) -> str:
    plan_columns = ", ".join(f'p."{field.column}"' for field in Plan._meta.concrete_fields)
    if not by_api_key:
        return _GATE_STATE_SQL.format(
            plan_columns=plan_columns, holder_columns="", holder="usage_userplan up", holder_is="up.user_id = %s"
        )
    return _GATE_STATE_SQL.format(
        plan_columns=plan_columns,
        holder_columns=", k.id, k.user_id, k.last_used_at",
        holder=f"""{ApiKey._meta.db_table} k
    JOIN {User._meta.db_table} u ON u.id = k.user_id
    LEFT JOIN usage_userplan up ON up.user_id = k.user_id""",
        holder_is="k.key_hash = %s AND k.revoked_at IS NULL AND u.is_active",
    )


def _quota_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Usage cannot be checked right now. Please try again shortly.", code="quota_unavailable")


def _gate_params(holder) -> list:
    now = timezone.now()
    today = now.date()
    adapt = connection.ops.adapt_datetimefield_value
    return [today.replace(day=1), today, adapt(now), adapt(now), holder]


def _gate_row(*, holder, by_api_key: bool = False) -> tuple | None:
    """The gate's one query for the user with id `holder`, or for the active API key with hash `holder`."""
    try:
        # A plain cursor, not a RawQuerySet: this runs before every paid call (0.2 ms less per message).
        with connection.cursor() as cursor:
            cursor.execute(_gate_state_sql(by_api_key), _gate_params(holder))
            return cursor.fetchone()
    except DatabaseError:
        logger.exception("Quota store unavailable: refusing paid calls")
        raise _quota_unavailable() from None


async def _gate_row_on_loop(*, holder, by_api_key: bool = False) -> tuple | None:
    """_gate_row from the event loop itself (aisaas.db.loop_fetchone)."""
    try:
        return await loop_fetchone(_gate_state_sql(by_api_key), _gate_params(holder))
    except LoopDatabaseError:
        logger.exception("Quota store unavailable: refusing paid calls")
        raise _quota_unavailable() from None


def gate_state(*, user) -> GateState:
    """The user's plan and current period, and the service's spend so far and caps: one query, because
    this runs before every paid call (docs/performance.md)."""
    row = _gate_row(holder=user.pk)
    if row is None:  # a user from before plans existed
        user_plan_create(user=user)
        return gate_state(user=user)
    return _state_from_row(row, user_id=user.pk)


async def gate_state_on_loop(*, user) -> GateState:
    """gate_state from the event loop itself (see gate_admit_on_loop)."""
    row = await _gate_row_on_loop(holder=user.pk)
    if row is None:  # a user from before plans existed: gate_state gives them one
        return await in_db_thread(gate_state)(user=user)
    return _state_from_row(row, user_id=user.pk)


@dataclass(frozen=True)
class KeyHolder:
    """Who an API key stands for, found by gate_state_for_api_key."""

    api_key_id: int
    api_key_last_used_at: datetime | None
    user: User  # only its id is loaded; other fields load on access


def gate_state_for_api_key(*, key_hash: str) -> tuple[KeyHolder, GateState] | None:
    """gate_state for the owner of the active API key with this hash, found in the same query (the API's key
    check costs no query of its own); None when no active key of an active user has this hash."""
    row = _gate_row(holder=key_hash, by_api_key=True)
    if row is None:
        return None
    if row[0] is None:  # no plan (p.id): a user from before plans existed
        user_plan_create(user=User.from_db(DEFAULT_DB_ALIAS, ["id"], [row[-2]]))
        return gate_state_for_api_key(key_hash=key_hash)
    return _holder_and_state(row)


async def gate_state_for_api_key_on_loop(*, key_hash: str) -> tuple[KeyHolder, GateState] | None:
    """gate_state_for_api_key from the event loop itself (see gate_admit_on_loop)."""
    row = await _gate_row_on_loop(holder=key_hash, by_api_key=True)
    if row is None:
        return None
    if row[0] is None:  # no plan: gate_state_for_api_key gives the user one
        return await in_db_thread(gate_state_for_api_key)(key_hash=key_hash)
    return _holder_and_state(row)


def _holder_and_state(row: tuple) -> tuple[KeyHolder, GateState]:
    api_key_id, user_id, last_used_at = row[-3:]
    holder = KeyHolder(
        api_key_id=api_key_id,
        api_key_last_used_at=None if last_used_at is None else db_datetime(last_used_at),
        user=User.from_db(DEFAULT_DB_ALIAS, ["id"], [user_id]),
    )
    return holder, _state_from_row(row[:-3], user_id=user_id)


_PERIOD_FIELDS = ["id", "user_id", "start", "end", "allowance", "used", "reserved"]


def _state_from_row(row: tuple, *, user_id: int) -> GateState:
    plan = _plan_from_row(row[:-_STATE_COLUMNS])
    (period_id, period_start, period_end, allowance, used, reserved, spent_this_month, spent_today, daily_cap,
     monthly_cap, kill_switch, suspended_at) = row[-_STATE_COLUMNS:]  # fmt: skip
    period = None
    if period_id is not None:  # the columns read; the others are deferred (loaded if ever asked for)
        period = QuotaPeriod.from_db(
            DEFAULT_DB_ALIAS,
            _PERIOD_FIELDS,
            (period_id, user_id, db_datetime(period_start), db_datetime(period_end), allowance, used, reserved),
        )
    return GateState(
        plan=plan,
        period=period,
        spent_today=_db_decimal(spent_today),
        spent_this_month=_db_decimal(spent_this_month),
        daily_cap=None if daily_cap is None else _db_decimal(daily_cap),
        monthly_cap=None if monthly_cap is None else _db_decimal(monthly_cap),
        kill_switch=bool(kill_switch),
        suspended=suspended_at is not None,
    )


@functools.cache
def _plan_converters(vendor: str) -> list[tuple]:
    """For each column of a plan row, its field and what the ORM does to the value read from this database
    (JSON text to a list, SQLite's integers to booleans, ...), which a plain cursor skips."""
    converters = []
    for field in Plan._meta.concrete_fields:
        expression = Col(Plan._meta.db_table, field)
        converters.append(
            (field, expression, connection.ops.get_db_converters(expression) + field.get_db_converters(connection))
        )
    return converters


def _plan_from_row(values) -> Plan:
    return _plan_from_values(tuple(values), database_vendor())


@functools.lru_cache(maxsize=256)
def _plan_from_values(values: tuple, vendor: str) -> Plan:
    """The Plan of a row's plan columns. Memoized by the columns: every paid call reads its plan, which seldom
    changes, and any edit changes a column and so the key. The same row gives the same object, which is why
    the gate can tell an unchanged plan by identity (_asks_as_before); callers only read it."""
    fields = {}
    for value, (field, expression, converters) in zip(values, _plan_converters(vendor), strict=True):
        for converter in converters:
            value = converter(value, expression, connection)
        fields[field.attname] = value
    plan = Plan(**fields)
    plan._state.adding, plan._state.db = False, DEFAULT_DB_ALIAS
    return plan


def _db_decimal(value) -> Decimal:
    """A raw column's number as Decimal (SQLite sums come back as float or int)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


@dataclass(frozen=True)
class _Request:
    """What gate_admit works out before asking the stores: the tokens to hold, the limits to take and the
    prompt cache key."""

    user_id: int
    model: str
    source: str
    api_key_id: int | None
    tokens: int
    max_tokens: int
    limits: list[limits.Limit]
    cache_key: str | None
    cache_rides: bool  # the cache lookup rides along with the limits' script (one Redis)


def _request_for(
    *,
    user_id: int,
    state: GateState,
    model: str,
    prompt: list[dict],
    source: str,
    cacheable: bool,
    max_tokens: int | None = None,
    api_key_id: int | None = None,
) -> _Request:
    if state.suspended:
        raise AccountSuspended("Your access to the AI service is suspended. Please contact support.")
    plan = state.plan
    max_tokens = min(plan.max_tokens_per_request, settings.LLM_MAX_TOKENS, max_tokens or settings.LLM_MAX_TOKENS)
    tokens = prompt_tokens_upper_bound(prompt) + max_tokens
    cache_key = None
    if cacheable and settings.PROMPT_CACHE_ENABLED:
        cache_key = prompt_cache.key_for(user_id=user_id, model=model, messages=prompt, max_tokens=max_tokens)
    # The cache lookup rides along with the limits' script when they share a Redis: a round trip less.
    return _Request(
        user_id=user_id,
        model=model,
        source=source,
        api_key_id=api_key_id,
        tokens=tokens,
        max_tokens=max_tokens,
        limits=_limits_for(user_id=user_id, plan=plan, tokens=tokens),
        cache_key=cache_key,
        cache_rides=cache_key is not None and prompt_cache.rides_with_limits(),
    )


def _cache_read(request: _Request) -> str | None:
    """The store key the limits' script should GET, if the cache lookup rides along."""
    return prompt_cache.store_key(request.cache_key) if request.cache_rides else None


def _limits_unavailable() -> ServiceUnavailable:
    logger.error("Rate-limit store unavailable: refusing paid calls")
    return ServiceUnavailable(
        "Usage limits cannot be checked right now. Please try again shortly.", code="limits_unavailable"
    )


def _refuse_unless_allowed(result: limits.LimitResult, request: _Request) -> None:
    if result.allowed:
        return
    refused = result.limit
    raise LimitReached(
        _LIMIT_MESSAGES[refused.name]
        if refused.cost <= refused.limit
        else f"This request could need {request.tokens:,} tokens, more than your daily limit.",
        limit=refused.name,
        limit_value=refused.limit,
        remaining=result.remaining,
        reset_at=datetime.fromtimestamp(result.now + result.retry_after_seconds, UTC).isoformat(),
        retry_after=max(1, round(result.retry_after_seconds)),
    )


def _admission(
    request: _Request, period: QuotaPeriod, taken: limits.LimitResult, cached_answer: dict | None
) -> Admission:
    per_minute = request.limits[0]
    return Admission(
        request_id=uuid.uuid4().hex,
        api_key_id=request.api_key_id,
        user_id=request.user_id,
        source=request.source,
        model=request.model,
        max_tokens=request.max_tokens,
        period_id=period.pk,
        period_end=period.end,
        reserved_tokens=request.tokens,
        tokens_limit=request.limits[-1],
        cache_key=request.cache_key,
        cached_answer=cached_answer,
        admitted_at=time.monotonic(),
        requests_per_minute=RateLimitState(
            per_minute.limit, taken.remaining, taken.now + taken.first_whole_after_seconds
        ),
    )


def gate_admit(
    *,
    user,
    state: GateState,
    model: str,
    prompt: list[dict],
    source: str,
    cacheable: bool,
    max_tokens: int | None = None,
    api_key_id: int | None = None,
) -> Admission:
    """Let a paid call through, or raise: AccountSuspended (403), LimitReached (429), SpendCapReached, or
    ServiceUnavailable when a store cannot be reached (I8). `state` comes from gate_state. Sync: run it in a
    database thread (gate_pass_on_loop is the same gate for the event loop). `max_tokens`: the caller's own
    limit (the API's), lowered to the plan's."""
    request = _request_for(
        user_id=user.pk,
        state=state,
        model=model,
        prompt=prompt,
        source=source,
        cacheable=cacheable,
        max_tokens=max_tokens,
        api_key_id=api_key_id,
    )
    try:
        result = limits.limiter().take(request.limits, read=_cache_read(request))
    except limits.LimitsUnavailable:
        raise _limits_unavailable() from None
    _refuse_unless_allowed(result, request)
    try:
        spend_check(state)
        period = state.period or quota_period_current(user=user, plan=state.plan)
        quota_reserve(period=period, tokens=request.tokens)
    except BaseException as error:
        limits.give_back_quietly(request.limits[-1], request.tokens)
        if isinstance(error, DatabaseError):
            logger.exception("Quota store unavailable: refusing paid calls")
            raise _quota_unavailable() from None
        raise
    cached_answer = None
    if request.cache_key is not None:
        cached_answer = (
            prompt_cache.decoded(result.read) if request.cache_rides else prompt_cache.get(request.cache_key)
        )
    return _admission(request, period, result, cached_answer)


async def gate_admit_on_loop(
    *,
    user,
    state: GateState,
    model: str,
    prompt: list[dict],
    source: str,
    cacheable: bool,
    max_tokens: int | None = None,
    api_key_id: int | None = None,
) -> Admission:
    """gate_admit from the event loop itself (PostgreSQL: aisaas.db.loop_queries_supported): the limits on the
    loop's Redis client, the reservation on its PostgreSQL connection; the rare steps that need the ORM or
    send mail (a period to create, a refusal to explain) go through in_db_thread."""
    request = _request_for(
        user_id=user.pk,
        state=state,
        model=model,
        prompt=prompt,
        source=source,
        cacheable=cacheable,
        max_tokens=max_tokens,
        api_key_id=api_key_id,
    )
    try:
        result = await limits.take_on_loop(request.limits, read=_cache_read(request))
    except limits.LimitsUnavailable:
        raise _limits_unavailable() from None
    _refuse_unless_allowed(result, request)
    try:
        if spend_cap_reached(state):
            await in_db_thread(spend_check)(state)  # refuses, and tells staff
        period = state.period or await in_db_thread(quota_period_current)(user=user, plan=state.plan)
        if await loop_execute(*quota_reserve_statement(period_id=period.pk, tokens=request.tokens)) != 1:
            await in_db_thread(quota_refuse)(period=period, tokens=request.tokens)
    except BaseException as error:
        await asyncio.shield(in_db_thread(limits.give_back_quietly)(request.limits[-1], request.tokens))
        if isinstance(error, DatabaseError | LoopDatabaseError):
            logger.exception("Quota store unavailable: refusing paid calls")
            raise _quota_unavailable() from None
        raise
    return _admission(request, period, result, await _cached_answer_on_loop(request, result))


async def _cached_answer_on_loop(request: _Request, result: limits.LimitResult) -> dict | None:
    if request.cache_key is None:
        return None
    if request.cache_rides:
        return prompt_cache.decoded(result.read)
    return await in_db_thread(prompt_cache.get)(request.cache_key)


# What gate_state_on_loop or gate_state_for_api_key_on_loop read: a user's state, or a key's holder and state.
Found = GateState | tuple[KeyHolder, GateState] | None


async def gate_pass_on_loop(
    *, user=None, key_hash: str | None = None, arguments_for: Callable[[Found], Awaitable[dict]]
) -> tuple[Found, dict, Admission]:
    """The whole gate from the event loop (PostgreSQL: gate_on_loop) for the chat's `user`, or for the holder
    of the API key with hash `key_hash`: what the gate reads of them (gate_state_on_loop,
    gate_state_for_api_key_on_loop), then `arguments_for(what it read)`, the caller's own checks (the model,
    the prompt) giving gate_admit_on_loop's arguments, then the admission. Returns all three.

    A caller admitted last time (gate_and_moderate's memory, which keeps what was read for them) is admitted
    in one round trip to each store at once: the read and the quota reservation go to PostgreSQL as one
    statement while the limits are taken in Redis, each sized by last time's state. The fresh read decides:
    if it makes the same request and nothing refuses, that is the admission; otherwise both are given back
    and the gate runs step by step on the fresh state. The outcome is the same as the step-by-step way's.

    `arguments_for` may depend on what was read only through the plan, the suspension and the key's holder,
    not on the usage and spend figures: when only those changed since last time, its arguments from last
    time are used with the fresh state instead of asking it again (_asks_as_before)."""
    caller = user.pk if key_hash is None else key_hash
    last = _admitted_callers.get(caller)
    passed = None
    if last is not None:
        passed = await _pass_as_last_time(
            holder=caller, by_api_key=key_hash is not None, last=last, arguments_for=arguments_for
        )
    if passed is None:
        if key_hash is None:
            found = await gate_state_on_loop(user=user)
        else:
            found = await gate_state_for_api_key_on_loop(key_hash=key_hash)
        arguments = await arguments_for(found)
        passed = found, arguments, await gate_admit_on_loop(**arguments)
    _admitted_caller_remember(caller, found=passed[0])
    return passed


def _read_and_hold(*, holder, by_api_key: bool, tokens: int) -> tuple[str, list]:
    """The gate's read and the reservation of `tokens` in the period it finds, as one statement: the state
    as it was before, and whether the tokens are held."""
    hold, hold_params = quota_reserve_found_by("SELECT period_id FROM state", tokens=tokens)
    sql = (
        f"WITH state AS ({_gate_state_sql(by_api_key)}), held AS ({hold} RETURNING 1) "  # noqa: S608 (our SQL)
        "SELECT state.*, EXISTS (SELECT 1 FROM held) FROM state"
    )
    return sql, [*_gate_params(holder), *hold_params]


async def _pass_as_last_time(
    *, holder, by_api_key: bool, last: Found, arguments_for: Callable[[Found], Awaitable[dict]]
) -> tuple[Found, dict, Admission] | None:
    """gate_pass_on_loop's one round trip to each store. None when that is not tried (last time's state
    already refuses the request) or the fresh read finds no plan or no such key: the step-by-step way then."""
    try:
        asked = await arguments_for(last)
        request = _request_from(asked)
    except Exception:  # the step-by-step way says why, from the fresh state
        return None
    # PostgreSQL's statement goes out first: it is the longer of the two, and sending the limits' script first
    # delayed it by that send's CPU (0.12 ms p50 more per message in bench/gate.py, docs/performance.md). The
    # read's task sends it in the loop's next turn, and take_soon's script follows it in that same turn.
    statement = _read_and_hold(holder=holder, by_api_key=by_api_key, tokens=request.tokens)
    read = asyncio.ensure_future(loop_fetchone(*statement))
    take = limits.take_soon(request.limits, read=_cache_read(request))  # sent in the next turn: after the statement
    try:
        await asyncio.wait([take, read])
    except asyncio.CancelledError:  # the caller went away: what was taken is given back once it is known
        _in_background(_give_back_when_done(request, take, read))
        raise
    taken, held_in = _what_was_taken(take, read)
    if take.exception() is not None or read.exception() is not None:
        await asyncio.shield(_give_back(request, taken=taken, held_in=held_in))
        if isinstance(take.exception(), limits.LimitsUnavailable):
            raise _limits_unavailable() from None
        if isinstance(read.exception(), LoopDatabaseError):
            logger.error("Quota store unavailable: refusing paid calls", exc_info=read.exception())
            raise _quota_unavailable() from None
        raise take.exception() or read.exception()
    row = read.result()
    if row is None or row[0] is None:  # the key is gone, or a user without a plan
        await asyncio.shield(_give_back(request, taken=taken, held_in=held_in))
        return None
    found = _holder_and_state(row[:-1]) if by_api_key else _state_from_row(row[:-1], user_id=holder)
    try:
        if _asks_as_before(found, last):  # the same arguments but the state, so the same request
            state = found[1] if by_api_key else found
            arguments, same_request = {**asked, "state": state}, True
        else:
            arguments = await arguments_for(found)
            state, same_request = arguments["state"], _request_from(arguments) == request
        if same_request and taken and held_in is not None and not spend_cap_reached(state):
            cached_answer = await _cached_answer_on_loop(request, take.result())
            return found, arguments, _admission(request, state.period, take.result(), cached_answer)
    except BaseException:
        await asyncio.shield(_give_back(request, taken=taken, held_in=held_in))
        raise
    await asyncio.shield(_give_back(request, taken=taken, held_in=held_in))
    return found, arguments, await gate_admit_on_loop(**arguments)


def _asks_as_before(found: Found, last: Found) -> bool:
    """Whether what was read differs from last time only in the usage and spend figures (the period, the spend,
    the caps): then arguments_for gives what it gave for `last`, but the state (gate_pass_on_loop)."""
    if isinstance(found, tuple):
        (holder, state), (last_holder, last_state) = found, last
        if (holder.api_key_id, holder.user.pk) != (last_holder.api_key_id, last_holder.user.pk):
            return False
    else:
        state, last_state = found, last
    return state.plan is last_state.plan and state.suspended == last_state.suspended


def _request_from(arguments: dict) -> _Request:
    """The request gate_admit_on_loop(**arguments) makes."""
    others = {name: value for name, value in arguments.items() if name != "user"}
    return _request_for(user_id=arguments["user"].pk, **others)


def _what_was_taken(take: asyncio.Future, read: asyncio.Future) -> tuple[bool, int | None]:
    """Whether the limits were taken, and the period in which tokens were held (None: none were)."""
    taken = take.exception() is None and take.result().allowed
    row = None if read.exception() is not None else read.result()
    held_in = row[len(Plan._meta.concrete_fields)] if row is not None and row[-1] else None  # the period_id column
    return taken, held_in


async def _give_back(request: _Request, *, taken: bool, held_in: int | None) -> None:
    if taken:
        await in_db_thread(limits.take_undo_quietly)(request.limits)
    if held_in is not None:
        try:
            await loop_execute(*quota_release_statement(period_id=held_in, tokens=request.tokens))
        except LoopDatabaseError:  # it stays held until quota_reservations_expire releases it as stale
            logger.warning("Could not release %s tokens held in period %s", request.tokens, held_in, exc_info=True)


async def _give_back_when_done(request: _Request, take: asyncio.Future, read: asyncio.Future) -> None:
    await asyncio.wait([take, read])
    taken, held_in = _what_was_taken(take, read)
    await _give_back(request, taken=taken, held_in=held_in)


_background_tasks: set[asyncio.Task] = set()


def _in_background(coroutine) -> None:
    """Run `coroutine` to its end whatever happens to the task that started it (the loop keeps only a weak
    reference to a task)."""
    task = asyncio.ensure_future(coroutine)
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)


def gate_release(admission: Admission) -> None:
    """Undo an admission that led to no provider call (moderation refused it, the client went away)."""
    quota_reservation_release(period_id=admission.period_id, tokens=admission.reserved_tokens)
    limits.give_back_quietly(admission.tokens_limit, admission.reserved_tokens)


async def moderation_check(*, admission: Admission, text: str, started: asyncio.Future | None = None) -> None:
    """Refuse text the moderation model flags, and record it for staff. Nothing is sent to the completion
    model before this passes. If moderation cannot be reached the request is refused (retryable).
    `started`: the moderation request for `text`, if it was sent already (gate_and_moderate)."""
    if not settings.MODERATION_ENABLED:
        return
    try:
        categories = await (started if started is not None else moderation_categories(text))
    except Exception:
        logger.warning("Moderation unavailable: refusing the request", exc_info=True)
        raise ServiceUnavailable(
            "Your message could not be checked right now. Please try again.", code="moderation_unavailable"
        ) from None
    if categories is not None:
        await in_db_thread(ModerationEvent.objects.create)(
            user_id=admission.user_id, source=admission.source, content=text, categories=categories
        )
        raise ContentFlagged(
            "This message was not sent: it breaks the content policy.",
            categories=categories,
        )


async def moderate_or_release(*, admission: Admission, text: str, started: asyncio.Future | None = None) -> None:
    """Moderate the user's text after the gate admitted it. If it is refused, or the caller goes away, before
    the provider is called, everything the gate holds is given back."""
    try:
        if text:
            await moderation_check(admission=admission, text=text, started=started)
    except BaseException:
        await asyncio.shield(in_db_thread(gate_release)(admission))
        raise


# The callers (a user of the chat, an API key's hash) whose last request through this process's gate was
# admitted, least recent first, at most _ADMITTED_CALLERS_MAX: only theirs are moderated alongside the gate. With
# each, what the gate on the loop read for them then (None from the database thread's gate): with it,
# gate_pass_on_loop admits them in one round trip to each store.
_ADMITTED_CALLERS_MAX = 10_000
_admitted_callers: OrderedDict[Hashable, Found] = OrderedDict()


def _admitted_caller_remember(caller: Hashable, *, found: Found = None) -> None:
    _admitted_callers[caller] = found if found is not None else _admitted_callers.get(caller)
    _admitted_callers.move_to_end(caller)
    if len(_admitted_callers) > _ADMITTED_CALLERS_MAX:
        _admitted_callers.popitem(last=False)


def gate_on_loop() -> bool:
    """Whether the gate runs on the event loop (gate_state_on_loop, gate_admit_on_loop): on PostgreSQL.
    Elsewhere (the embedded default's SQLite) it runs in a database thread."""
    return loop_queries_supported()


async def gate_and_moderate(
    admit: Callable[[], Awaitable[T]],
    *,
    caller: Hashable,
    text: str,
    admission_of: Callable[[T], Admission] = lambda admission: admission,
) -> T:
    """Pass the gate (`admit`: ends in gate_pass_on_loop, or in gate_admit run in a database thread) and
    moderation of the user's `text`; returns what `admit` returned, or raises the refusal, having given back
    all it held.

    For a `caller` the gate admitted last time, the moderation request is sent as the gate starts: it is a
    provider round trip, the gate database and Redis round trips, and the first token then waits for the
    longer, not the sum (docs/performance.md). The outcome is the same as running them in order: a gate
    refusal wins (the moderation answer is dropped, nothing is recorded), and nothing is sent to the
    completion model before moderation passes. Anyone else (new in this process, refused last time, an
    unknown API key) is moderated only once admitted, so requests that the gate refuses (a client retrying
    against a limit, a guessed key) never cost a moderation call.
    """
    started = None
    if text and settings.MODERATION_ENABLED and caller in _admitted_callers:
        started = asyncio.ensure_future(moderation_categories(text))
    try:
        result = await admit()
    except BaseException:
        _admitted_callers.pop(caller, None)
        if started is not None:
            started.cancel()
            started.add_done_callback(lambda done: done.cancelled() or done.exception())  # answer not needed
        raise
    _admitted_caller_remember(caller)
    await moderate_or_release(admission=admission_of(result), text=text, started=started)
    return result

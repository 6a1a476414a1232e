"""The one gate in front of every paid call (a chat message, an edit, a regenerate, an API call, a cache hit):
what it reads of the caller (gate_state, gate_state_for_api_key), then gate_admit: rate limits -> spend cap ->
quota reservation -> prompt cache lookup, then moderation (moderate_or_release), all before anything is sent to
the completion model. Async, on the event loop: its statements go through core.db's loop pool, its scripts
through usage.limits. Nothing about a caller is remembered between calls: a plan change, a suspension, a cap or
the kill switch applies to the next call in every process."""

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models.expressions import Col
from django.utils import timezone

from core.db import LoopDatabaseError, db_datetime, in_db_thread, loop_execute, loop_fetchone
from core.errors import ServiceUnavailable
from llm.provider import moderation_categories
from usage import limits, prompt_cache
from usage.errors import AccountSuspended, ContentFlagged, LimitReached
from usage.models import ModerationEvent, Plan, QuotaPeriod
from usage.services.periods import (
    quota_period_current,
    quota_refuse,
    quota_release_statement,
    quota_reserve_statement,
)
from usage.services.plans import user_plan_create
from usage.services.spend import spend_cap_reached, spend_check
from usage.tokens import prompt_tokens_upper_bound
from users.models import ApiKey, User

logger = logging.getLogger(__name__)


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
    logger.exception("Quota store unavailable: refusing paid calls")
    return ServiceUnavailable("Usage cannot be checked right now. Please try again shortly.", code="quota_unavailable")


def _gate_params(holder) -> list:
    now = timezone.now()
    today = now.date()
    return [today.replace(day=1), today, now, now, holder]


async def _gate_row(*, holder, by_api_key: bool = False) -> tuple | None:
    """The gate's one query for the user with id `holder`, or for the active API key with hash `holder`."""
    try:
        return await loop_fetchone(_gate_state_sql(by_api_key), _gate_params(holder))
    except LoopDatabaseError:
        raise _quota_unavailable() from None


async def gate_state(*, user) -> GateState:
    """The user's plan and current period, and the service's spend so far and caps: one query, because
    this runs before every paid call (docs/performance.md)."""
    row = await _gate_row(holder=user.pk)
    if row is None:  # a user from before plans existed
        await in_db_thread(user_plan_create)(user=user)
        return await gate_state(user=user)
    return _state_from_row(row, user_id=user.pk)


@dataclass(frozen=True)
class KeyHolder:
    """Who an API key stands for, found by gate_state_for_api_key."""

    api_key_id: int
    api_key_last_used_at: datetime | None
    user: User  # only its id is loaded; other fields load on access


async def gate_state_for_api_key(*, key_hash: str) -> tuple[KeyHolder, GateState] | None:
    """gate_state for the owner of the active API key with this hash, found in the same query (the API's key
    check costs no query of its own); None when no active key of an active user has this hash."""
    row = await _gate_row(holder=key_hash, by_api_key=True)
    if row is None:
        return None
    if row[0] is None:  # no plan (p.id): a user from before plans existed
        await in_db_thread(user_plan_create)(user=User.from_db(DEFAULT_DB_ALIAS, ["id"], [row[-2]]))
        return await gate_state_for_api_key(key_hash=key_hash)
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
        spent_today=spent_today,
        spent_this_month=spent_this_month,
        daily_cap=daily_cap,
        monthly_cap=monthly_cap,
        kill_switch=bool(kill_switch),
        suspended=suspended_at is not None,
    )


@functools.cache
def _plan_converters() -> list[tuple]:
    """For each column of a plan row, its field and what the ORM does to the value read (JSON text to a list,
    ...), which a plain cursor skips."""
    converters = []
    for field in Plan._meta.concrete_fields:
        expression = Col(Plan._meta.db_table, field)
        converters.append(
            (field, expression, connection.ops.get_db_converters(expression) + field.get_db_converters(connection))
        )
    return converters


def _plan_from_row(values) -> Plan:
    fields = {}
    for value, (field, expression, converters) in zip(values, _plan_converters(), strict=True):
        for converter in converters:
            value = converter(value, expression, connection)
        fields[field.attname] = value
    plan = Plan(**fields)
    plan._state.adding, plan._state.db = False, DEFAULT_DB_ALIAS
    return plan


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
    return _Request(
        user_id=user_id,
        model=model,
        source=source,
        api_key_id=api_key_id,
        tokens=tokens,
        max_tokens=max_tokens,
        limits=_limits_for(user_id=user_id, plan=plan, tokens=tokens),
        cache_key=cache_key,
    )


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
        # X-RateLimit-Reset: when all of the limit is back, as on every admitted call (core.middleware)
        limit_reset_at=datetime.fromtimestamp(result.now + result.whole_after_seconds, UTC).isoformat(),
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
        requests_per_minute=RateLimitState(per_minute.limit, taken.remaining, taken.now + taken.whole_after_seconds),
    )


async def gate_admit(
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
    ServiceUnavailable when a store cannot be reached (I8). `state` comes from gate_state (or
    gate_state_for_api_key). `max_tokens`: the caller's own limit (the API's), lowered to the plan's.

    Cheapest first: the limits in one Redis script (which also reads the prompt cache), the spend cap on what
    was read, then the reservation, one conditional UPDATE (I1). The rare steps that need the ORM or send mail
    (a period to create, a refusal to explain) go through in_db_thread. A refusal after the limits were taken
    gives back the tokens taken (the request still counts)."""
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
        result = await limits.take(request.limits, read=request.cache_key)
    except limits.LimitsUnavailable:
        raise _limits_unavailable() from None
    _refuse_unless_allowed(result, request)
    try:
        if spend_cap_reached(state):
            await in_db_thread(spend_check)(state)  # refuses, and tells staff
        period = state.period or await in_db_thread(quota_period_current)(user=user, plan=state.plan)
        if not await _reserve(period_id=period.pk, tokens=request.tokens):
            await in_db_thread(quota_refuse)(period=period, tokens=request.tokens)
    except BaseException as error:
        await asyncio.shield(limits.give_back(request.limits[-1], request.tokens))
        if isinstance(error, LoopDatabaseError):
            raise _quota_unavailable() from None
        raise
    cached_answer = prompt_cache.decoded(result.read) if request.cache_key else None
    return _admission(request, period, result, cached_answer)


async def _reserve(*, period_id: int, tokens: int) -> bool:
    """Hold `tokens` of the period if they fit (quota_reserve_statement). A caller that goes away while the
    statement runs leaves nothing held: once its outcome is known, what it held is given back."""
    reserving = asyncio.ensure_future(loop_execute(*quota_reserve_statement(period_id=period_id, tokens=tokens)))
    try:
        return await asyncio.shield(reserving) == 1
    except asyncio.CancelledError:
        with contextlib.suppress(LoopDatabaseError):
            if await reserving == 1:
                await loop_execute(*quota_release_statement(period_id=period_id, tokens=tokens))
        raise


async def gate_release(admission: Admission) -> None:
    """Undo an admission that led to no provider call (moderation refused it, the client went away)."""
    try:
        await loop_execute(*quota_release_statement(period_id=admission.period_id, tokens=admission.reserved_tokens))
    except LoopDatabaseError:  # it stays held until quota_reservations_expire releases it as stale
        logger.warning("Could not release %s tokens held in period %s", admission.reserved_tokens,
                       admission.period_id, exc_info=True)  # fmt: skip
    await limits.give_back(admission.tokens_limit, admission.reserved_tokens)


async def moderation_check(*, admission: Admission, text: str) -> None:
    """Refuse text the moderation model flags, and record it for staff. Nothing is sent to the completion
    model before this passes. If moderation cannot be reached the request is refused (retryable)."""
    if not settings.MODERATION_ENABLED:
        return
    try:
        categories = await moderation_categories(text)
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


async def moderate_or_release(*, admission: Admission, text: str) -> None:
    """Moderate the user's text after the gate admitted it: the gate refuses first, so a request it refuses (a
    client retrying against a limit, a guessed key) never costs a moderation call. If the text is refused, or the
    caller goes away, before the provider is called, everything the gate holds is given back."""
    try:
        if text:
            await moderation_check(admission=admission, text=text)
    except BaseException:
        await asyncio.shield(gate_release(admission))
        raise

"""The usage gate and its settlement: one service for every paid call (the chat websocket, the HTTP API).

    gate_admit      rate limits -> global spend cap -> token quota reservation -> prompt cache lookup
    moderation_check  (async, after the gate, before anything is sent to the completion model)
    usage_settle    in the caller's transaction: the usage record, the quota, the spend ledger
    limits_settle   after the commit: give back the unused tokens of the tokens/day limit
    gate_release    a request refused or abandoned after gate_admit: give everything back

Invariants (docs/architecture.md): I1 the quota reservation is one conditional UPDATE covering the worst
case; I2 one UsageRecord per provider call or cache hit, unique by request id; I5 limits live in Redis;
I6 periods roll over on access; I8 an unreachable store refuses the request.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.core.mail import mail_admins
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from aisaas.db import in_db_thread
from aisaas.errors import ApplicationError, ServiceUnavailable
from chat.llm import model_catalogue
from usage import limits, prompt_cache
from usage.models import ModerationEvent, Plan, QuotaPeriod, SpendDay, UserPlan
from usage.selectors import quota_meter
from usage.tokens import prompt_tokens_upper_bound

logger = logging.getLogger(__name__)

COST_PLACES = Decimal("0.0000000001")


class LimitReached(ApplicationError):
    """A per-user limit refused the request. Details say which, what is left, and when to retry."""

    code = "rate_limited"
    http_status = 429


class SpendCapReached(ApplicationError):
    code = "spend_cap"
    http_status = 503


class ContentFlagged(ApplicationError):
    code = "moderation_flagged"
    http_status = 403


@dataclass(frozen=True)
class Admission:
    """A request the gate let through, with what it holds until it is settled or released."""

    request_id: str
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


# ------------------------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------------------------
def default_plan() -> Plan:
    return Plan.objects.get(is_default=True)


def user_plan_create(*, user) -> UserPlan:
    user_plan, _ = UserPlan.objects.get_or_create(user=user, defaults={"plan": default_plan()})
    return user_plan


def plan_for(*, user) -> Plan:
    user_plan = UserPlan.objects.select_related("plan").filter(user=user).first()
    return user_plan.plan if user_plan else default_plan()


@transaction.atomic
def plan_change(*, user, plan: Plan) -> UserPlan:
    """Put the user on `plan`. The current period takes the new allowance at once (an upgrade is usable
    immediately; a downgrade below what is used simply leaves nothing to spend until the period ends)."""
    user_plan, _ = UserPlan.objects.update_or_create(user=user, defaults={"plan": plan, "changed_at": timezone.now()})
    now = timezone.now()
    QuotaPeriod.objects.filter(user=user, start__lte=now, end__gt=now).update(allowance=plan.monthly_token_allowance)
    return user_plan


def model_allowed(*, plan: Plan, model_id: str) -> bool:
    return plan.allows_model(model_id)


# ------------------------------------------------------------------------------------------------------------
# Quota periods
# ------------------------------------------------------------------------------------------------------------
def calendar_month(moment: datetime) -> tuple[datetime, datetime]:
    moment = moment.astimezone(UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def quota_period_current(*, user, plan: Plan, now: datetime | None = None) -> QuotaPeriod:
    """The user's period containing `now`, created on first access (lazy rollover: no beat needed)."""
    now = now or timezone.now()
    period = QuotaPeriod.objects.filter(user=user, start__lte=now, end__gt=now).order_by("-start").first()
    if period is None:
        start, end = calendar_month(now)
        period, _ = QuotaPeriod.objects.get_or_create(
            user=user, start=start, defaults={"end": end, "allowance": plan.monthly_token_allowance}
        )
    return period


def quota_reserve(*, period: QuotaPeriod, tokens: int) -> None:
    """Hold `tokens` of the period, or refuse: one conditional UPDATE, so concurrent requests can never
    hold more than the allowance between them (I1)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE usage_quotaperiod SET reserved = reserved + %s WHERE id = %s AND used + reserved + %s <= allowance",
            [tokens, period.pk, tokens],
        )
        held = cursor.rowcount == 1
    if not held:
        period.refresh_from_db()
        remaining = period.remaining
        raise LimitReached(
            "You have used this period's tokens."
            if remaining == 0
            else f"This request could need up to {tokens:,} tokens; {remaining:,} are left this period.",
            code="quota_exceeded",
            limit="monthly_tokens",
            limit_value=period.allowance,
            remaining=remaining,
            reset_at=period.end.isoformat(),
            retry_after=max(0, round((period.end - timezone.now()).total_seconds())),
        )


def quota_periods_roll_over(*, now: datetime | None = None) -> int:
    """Start the current calendar month for every user whose last period has ended: one INSERT … SELECT.
    Safe to run twice or after a missed month (the unique (user, start) absorbs repeats; a missed month is
    simply skipped). Users who never chatted get their period lazily, on first use."""
    now = now or timezone.now()
    start, end = calendar_month(now)
    adapt = connection.ops.adapt_datetimefield_value
    sql = """
        INSERT INTO usage_quotaperiod (user_id, start, "end", allowance, used, reserved, created_at)
        SELECT up.user_id, %s, %s, p.monthly_token_allowance, 0, 0, %s
        FROM usage_userplan up JOIN usage_plan p ON p.id = up.plan_id
        WHERE EXISTS (SELECT 1 FROM usage_quotaperiod q WHERE q.user_id = up.user_id AND q."end" <= %s)
          AND NOT EXISTS (SELECT 1 FROM usage_quotaperiod q WHERE q.user_id = up.user_id AND q."end" > %s)
        ON CONFLICT (user_id, start) DO NOTHING
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [adapt(start), adapt(end), adapt(now), adapt(now), adapt(now)])
        return cursor.rowcount


# ------------------------------------------------------------------------------------------------------------
# Global spend cap
# ------------------------------------------------------------------------------------------------------------
def spend_check(state: "GateState") -> None:
    """Refuse every paid call once today's or this month's provider cost reached its cap, or the kill switch
    is on. The cap is checked against settled cost: calls already in flight when it is crossed still finish,
    so it can be passed by at most their cost (each bounded by the plan's max_tokens)."""
    if settings.SPEND_KILL_SWITCH or state.kill_switch:
        raise SpendCapReached("The AI service is paused by the operators. Please try again later.", code="paused")
    daily_cap = settings.SPEND_CAP_DAILY_USD if state.daily_cap is None else state.daily_cap
    monthly_cap = settings.SPEND_CAP_MONTHLY_USD if state.monthly_cap is None else state.monthly_cap
    for period, amount, cap in (("day", state.spent_today, daily_cap), ("month", state.spent_this_month, monthly_cap)):
        if amount >= cap:
            _spend_cap_alert(period=period, amount=amount, cap=cap)
            raise SpendCapReached(
                "The service has reached its spending limit for now. Please try again later.",
                limit=f"spend_per_{period}",
            )


def _spend_cap_alert(*, period: str, amount: Decimal, cap: Decimal) -> None:
    """Tell staff once per day (or month) that the cap refuses paid calls: the first refusal logs and
    queues a mail to ADMINS; the rest find the cache key already there."""
    from usage.tasks import alert_spend_cap

    when = timezone.now().strftime("%Y-%m-%d" if period == "day" else "%Y-%m")
    try:
        first = cache.add(f"spend-cap-alert:{period}:{when}", True, timeout=32 * 86400)
    except Exception:
        first = True
    if first:
        logger.error("Global spend cap reached (%s: $%s of $%s): refusing paid calls", period, amount, cap)
        alert_spend_cap.delay(period=period, amount=str(amount), cap=str(cap))


def spend_cap_alert_send(*, period: str, amount: str, cap: str) -> None:
    mail_admins(
        f"Spend cap reached for this {period}",
        f"Provider cost this {period} is ${amount}, at or over the cap of ${cap}. Paid calls are being refused "
        "until the next period, or until the cap is raised in the admin (Usage > Spend controls).",
    )


# ------------------------------------------------------------------------------------------------------------
# The gate
# ------------------------------------------------------------------------------------------------------------
def _limits_for(*, user_id: int, plan: Plan, tokens: int) -> list[limits.Limit]:
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


# Plan columns map onto a Plan instance; the rest become attributes of it (RawQuerySet), read below.
_GATE_STATE_SQL = """
    SELECT p.*,
           q.id AS period_id, q.start AS period_start, q."end" AS period_end,
           q.allowance AS period_allowance, q.used AS period_used, q.reserved AS period_reserved,
           (SELECT COALESCE(SUM(s.cost), 0) FROM usage_spendday s WHERE s.day >= %s) AS spent_this_month,
           (SELECT COALESCE(SUM(s.cost), 0) FROM usage_spendday s WHERE s.day = %s) AS spent_today,
           c.daily_cap_usd AS daily_cap, c.monthly_cap_usd AS monthly_cap, c.kill_switch AS kill_switch
    FROM usage_userplan up
    JOIN usage_plan p ON p.id = up.plan_id
    LEFT JOIN usage_quotaperiod q ON q.user_id = up.user_id AND q.start <= %s AND q."end" > %s
    LEFT JOIN usage_spendcontrol c ON c.id = (SELECT MIN(id) FROM usage_spendcontrol)
    WHERE up.user_id = %s
    ORDER BY q.start DESC
    LIMIT 1
"""


def gate_state(*, user) -> GateState:
    """The user's plan and current period, and the service's spend so far and caps: one query, because
    this runs before every paid call (docs/performance.md)."""
    now = timezone.now()
    today = now.date()
    adapt = connection.ops.adapt_datetimefield_value
    params = [today.replace(day=1), today, adapt(now), adapt(now), user.pk]
    row = next(iter(Plan.objects.raw(_GATE_STATE_SQL, params)), None)
    if row is None:  # a user from before plans existed
        user_plan_create(user=user)
        return gate_state(user=user)
    period = None
    if row.period_id is not None:
        period = QuotaPeriod(
            pk=row.period_id,
            user_id=user.pk,
            start=_db_datetime(row.period_start),
            end=_db_datetime(row.period_end),
            allowance=row.period_allowance,
            used=row.period_used,
            reserved=row.period_reserved,
        )
    return GateState(
        plan=row,
        period=period,
        spent_today=_db_decimal(row.spent_today),
        spent_this_month=_db_decimal(row.spent_this_month),
        daily_cap=None if row.daily_cap is None else _db_decimal(row.daily_cap),
        monthly_cap=None if row.monthly_cap is None else _db_decimal(row.monthly_cap),
        kill_switch=bool(row.kill_switch),
    )


def _db_datetime(value) -> datetime:
    """A raw column's datetime: PostgreSQL gives an aware datetime, SQLite a string in UTC."""
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    return parse_datetime(value).replace(tzinfo=UTC)


def _db_decimal(value) -> Decimal:
    """A raw column's number as Decimal (SQLite sums come back as float or int)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def gate_admit(*, user, state: GateState, model: str, prompt: list[dict], source: str, cacheable: bool) -> Admission:
    """Let a paid call through, or raise: LimitReached (429), SpendCapReached, or ServiceUnavailable when a
    store cannot be reached (I8). `state` comes from gate_state. Sync: run it in a database thread."""
    plan = state.plan
    max_tokens = min(plan.max_tokens_per_request, settings.LLM_MAX_TOKENS)
    tokens = prompt_tokens_upper_bound(prompt) + max_tokens
    user_limits = _limits_for(user_id=user.pk, plan=plan, tokens=tokens)
    try:
        result = limits.limiter().take(user_limits)
    except limits.LimitsUnavailable:
        logger.error("Rate-limit store unavailable: refusing paid calls")
        raise ServiceUnavailable(
            "Usage limits cannot be checked right now. Please try again shortly.", code="limits_unavailable"
        ) from None
    if not result.allowed:
        refused = result.limit
        raise LimitReached(
            _LIMIT_MESSAGES[refused.name]
            if refused.cost <= refused.limit
            else f"This request could need {tokens:,} tokens, more than your daily limit.",
            limit=refused.name,
            limit_value=refused.limit,
            remaining=result.remaining,
            reset_at=datetime.fromtimestamp(result.now + result.retry_after_seconds, UTC).isoformat(),
            retry_after=max(1, round(result.retry_after_seconds)),
        )
    tokens_limit = user_limits[-1]
    try:
        spend_check(state)
        period = state.period or quota_period_current(user=user, plan=plan)
        quota_reserve(period=period, tokens=tokens)
    except BaseException as error:
        _give_back_tokens(tokens_limit, tokens)
        if isinstance(error, DatabaseError):
            logger.exception("Quota store unavailable: refusing paid calls")
            raise ServiceUnavailable(
                "Usage cannot be checked right now. Please try again shortly.", code="quota_unavailable"
            ) from None
        raise
    cache_key = prompt_cache.key_for(user_id=user.pk, model=model, messages=prompt, max_tokens=max_tokens)
    return Admission(
        request_id=uuid.uuid4().hex,
        user_id=user.pk,
        source=source,
        model=model,
        max_tokens=max_tokens,
        period_id=period.pk,
        period_end=period.end,
        reserved_tokens=tokens,
        tokens_limit=tokens_limit,
        cache_key=cache_key if cacheable else None,
        cached_answer=prompt_cache.get(cache_key) if cacheable else None,
        admitted_at=time.monotonic(),
    )


def _give_back_tokens(tokens_limit: limits.Limit, amount: int) -> None:
    if amount <= 0:
        return
    try:
        limits.limiter().give_back(tokens_limit, amount)
    except limits.LimitsUnavailable:
        # The daily token limit stays stricter than it should until its window passes; never looser.
        logger.warning("Could not give back %s tokens to the daily limit", amount)


def gate_release(admission: Admission) -> None:
    """Undo an admission that led to no provider call (moderation refused it, the client went away)."""
    QuotaPeriod.objects.filter(pk=admission.period_id).update(reserved=F("reserved") - admission.reserved_tokens)
    _give_back_tokens(admission.tokens_limit, admission.reserved_tokens)


async def moderation_check(*, user, admission: Admission, text: str) -> None:
    """Refuse text the moderation model flags, and record it for staff. Nothing is sent to the completion
    model before this passes. If moderation cannot be reached the request is refused (retryable)."""
    if not settings.MODERATION_ENABLED:
        return
    from chat.llm import moderation_categories

    try:
        categories = await moderation_categories(text)
    except Exception:
        logger.warning("Moderation unavailable: refusing the request", exc_info=True)
        raise ServiceUnavailable(
            "Your message could not be checked right now. Please try again.", code="moderation_unavailable"
        ) from None
    if categories is not None:
        await in_db_thread(ModerationEvent.objects.create)(
            user=user, source=admission.source, content=text, categories=categories
        )
        raise ContentFlagged(
            "This message was not sent: it breaks the content policy.",
            categories=categories,
        )


# ------------------------------------------------------------------------------------------------------------
# Settlement
# ------------------------------------------------------------------------------------------------------------
def cost_of(*, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    info = model_catalogue().get(model) or model_catalogue().fallback
    if info is None:
        return Decimal(0)
    cost = (prompt_tokens * info.input_usd_per_1m + completion_tokens * info.output_usd_per_1m) / 1_000_000
    return cost.quantize(COST_PLACES)


@dataclass(frozen=True)
class Settlement:
    recorded: bool  # False: this request was settled before, nothing was written
    billable_tokens: int
    meter: dict  # the user's period afterwards, as usage.selectors.quota_meter shows it


_RECORD_INSERT_SQL = """
    INSERT INTO usage_usagerecord (user_id, conversation_id, message_id, request_id, source, model, status,
        prompt_tokens, completion_tokens, billable_tokens, cost, cached, latency_ms, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (request_id) DO NOTHING
"""
_QUOTA_SETTLE_SQL = """
    UPDATE usage_quotaperiod SET used = used + %s, reserved = reserved - %s WHERE id = %s
    RETURNING allowance, used, reserved
"""
_SPEND_ADD_SQL = """
    INSERT INTO usage_spendday (day, shard, cost, requests) VALUES (%s, %s, %s, 1)
    ON CONFLICT (day, shard) DO UPDATE
    SET cost = usage_spendday.cost + EXCLUDED.cost, requests = usage_spendday.requests + 1
"""


def usage_settle(
    *,
    admission: Admission,
    conversation_id: int | None,
    message_id: int | None,
    model: str,
    status: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached: bool = False,
) -> Settlement:
    """Account for one provider call (or cache hit) exactly once (I2): the usage record, the period's quota
    moved from reserved to used at the actual amount, and the day's spend. Run it inside the transaction that
    saves the answer, so both or neither are written. Plain SQL: it runs after every message."""
    if cached:
        cost = Decimal(0)  # nothing was paid to the provider
        billable = prompt_tokens + completion_tokens if settings.PROMPT_CACHE_HIT_CHARGE == "full" else 0
    else:
        cost = cost_of(model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        billable = prompt_tokens + completion_tokens
    now = timezone.now()
    ops = connection.ops
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _RECORD_INSERT_SQL,
            [
                admission.user_id,
                conversation_id,
                message_id,
                admission.request_id,
                admission.source,
                model,
                status,
                prompt_tokens,
                completion_tokens,
                billable,
                ops.adapt_decimalfield_value(cost, 20, 10),
                cached,
                round((time.monotonic() - admission.admitted_at) * 1000),
                ops.adapt_datetimefield_value(now),
            ],
        )
        recorded = cursor.rowcount == 1
        if recorded:
            cursor.execute(_QUOTA_SETTLE_SQL, [billable, admission.reserved_tokens, admission.period_id])
            allowance, used, reserved = cursor.fetchone()
            cursor.execute(
                _SPEND_ADD_SQL,
                [
                    ops.adapt_datefield_value(now.date()),
                    admission.user_id % SpendDay.SHARDS,
                    ops.adapt_decimalfield_value(cost, 20, 10),
                ],
            )
        else:  # settled before (a retry): report the period as it is
            period = QuotaPeriod.objects.get(pk=admission.period_id)
            allowance, used, reserved = period.allowance, period.used, period.reserved
    period = QuotaPeriod(allowance=allowance, used=used, reserved=reserved, end=admission.period_end)
    return Settlement(recorded, billable if recorded else 0, quota_meter(period=period))


def limits_settle(*, admission: Admission, settlement: Settlement) -> None:
    """After the commit: the tokens/day limit keeps what was used and gets the rest of the hold back."""
    if settlement.recorded:
        _give_back_tokens(admission.tokens_limit, admission.reserved_tokens - settlement.billable_tokens)

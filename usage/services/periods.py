"""Quota periods: the monthly token allowance, reserved before a call and settled after (I1, I6)."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from usage.errors import LimitReached
from usage.models import Plan, QuotaPeriod, UserPlan
from usage.selectors import calendar_month, period_dates, quota_period_at


def quota_period_current(*, user, plan: Plan, now: datetime | None = None) -> QuotaPeriod:
    """The user's period containing `now`, created on first access (lazy rollover: no beat needed), aligned
    to the subscription for paying users."""
    now = now or timezone.now()
    period = quota_period_at(user=user, moment=now)
    if period is None:
        cycle_anchor = UserPlan.objects.filter(user=user).values_list("cycle_anchor", flat=True).first()
        start, end = period_dates(cycle_anchor=cycle_anchor, moment=now)
        period, _ = QuotaPeriod.objects.get_or_create(
            user=user, start=start, defaults={"end": end, **period_terms(plan)}
        )
    return period


def period_terms(plan: Plan) -> dict:
    """What a period takes from its plan."""
    return {"allowance": plan.period_token_limit, "metered_after": plan.metered_after}


def quota_period_align(*, user, plan: Plan, start: datetime, end: datetime) -> QuotaPeriod:
    """Make [start, end) (a subscription's current period) the user's period there. A period running at
    `start` ends at `start`; one that was started lazily inside the new period and has nothing counted is
    dropped. Idempotent: a replayed subscription event finds the period as it left it."""
    QuotaPeriod.objects.filter(user=user, start__lt=start, end__gt=start).update(end=start)
    QuotaPeriod.objects.filter(user=user, start__gt=start, start__lt=end, used=0, reserved=0).delete()
    terms = {"end": end, **period_terms(plan)}
    period, created = QuotaPeriod.objects.get_or_create(user=user, start=start, defaults=terms)
    terms["allowance"] += period.bonus_tokens
    if not created and any(getattr(period, name) != value for name, value in terms.items()):
        QuotaPeriod.objects.filter(pk=period.pk).update(**terms)
        period.refresh_from_db()
    return period


_RESERVE_SQL = (
    "UPDATE usage_quotaperiod SET reserved = reserved + %s, reserved_at = %s "
    "WHERE id = %s AND used + reserved + %s <= allowance"
)


def quota_reserve_statement(*, period_id: int, tokens: int) -> tuple[str, list]:
    """Hold `tokens` of the period if they fit: one conditional UPDATE, so concurrent requests can never hold
    more than the allowance between them (I1). It changes one row if the tokens are held."""
    return _RESERVE_SQL, [tokens, timezone.now(), period_id, tokens]


def quota_refuse(*, period: QuotaPeriod, tokens: int) -> None:
    """Raise the refusal for a reservation that did not fit, with the period's numbers as they are now."""
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
    simply skipped). Users who never chatted get their period lazily, on first use, and so do paying users,
    whose periods follow their subscription (and its webhooks)."""
    now = now or timezone.now()
    start, end = calendar_month(now)
    adapt = connection.ops.adapt_datetimefield_value
    sql = """
        INSERT INTO usage_quotaperiod (user_id, start, "end", allowance, metered_after, used, cost, reserved,
            bonus_tokens, created_at)
        SELECT up.user_id, %s, %s,
               CASE WHEN p.metering = 'overage' THEN p.monthly_token_allowance + p.overage_token_limit
                    ELSE p.monthly_token_allowance END,
               CASE p.metering WHEN 'overage' THEN p.monthly_token_allowance WHEN 'all' THEN 0 END,
               0, 0, 0, 0, %s
        FROM usage_userplan up JOIN usage_plan p ON p.id = up.plan_id
        WHERE up.cycle_anchor IS NULL
          AND EXISTS (SELECT 1 FROM usage_quotaperiod q WHERE q.user_id = up.user_id AND q."end" <= %s)
          AND NOT EXISTS (SELECT 1 FROM usage_quotaperiod q WHERE q.user_id = up.user_id AND q."end" > %s)
        ON CONFLICT (user_id, start) DO NOTHING
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [adapt(start), adapt(end), adapt(now), adapt(now), adapt(now)])
        return cursor.rowcount


def quota_release_statement(*, period_id: int, tokens: int) -> tuple[str, list]:
    """Give back a reservation that led to no provider call. Never below zero (as in settlement): the
    reservation may already have been released as stale by quota_reservations_expire."""
    return (
        "UPDATE usage_quotaperiod SET reserved = CASE WHEN reserved > %s THEN reserved - %s ELSE 0 END WHERE id = %s",
        [tokens, tokens, period_id],
    )


def quota_reservations_expire() -> int:
    """Release the reservations of requests that can no longer be running: a web process died between the
    reservation and the settlement. Only periods with no reservation for USAGE_STALE_RESERVATION_MINUTES
    (longer than any request may stream) are touched, so a live request is never robbed. Safe to run twice."""
    cutoff = timezone.now() - timedelta(minutes=settings.USAGE_STALE_RESERVATION_MINUTES)
    return QuotaPeriod.objects.filter(reserved__gt=0, reserved_at__lt=cutoff).update(reserved=0)

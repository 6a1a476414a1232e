"""Reads for the usage meter and the /usage/ page."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from usage.models import Plan, QuotaPeriod, UsageRecord, UserPlan
from users.models import ApiKey

WARNING_SHARE = 0.8


def quota_meter(*, period: QuotaPeriod) -> dict:
    """What the chat page's meter shows, as JSON: used of the allowance, and when it resets."""
    return quota_meter_of(allowance=period.allowance, used=period.used, reserved=period.reserved, end=period.end)


def quota_meter_of(*, allowance: int, used: int, reserved: int, end: datetime) -> dict:
    """quota_meter of a period's numbers (the settlement's, which has no QuotaPeriod to build)."""
    share = (used / allowance) if allowance else 1.0
    return {
        "used": used,
        "reserved": reserved,
        "allowance": allowance,
        "remaining": max(0, allowance - used - reserved),
        "reset_at": end.isoformat(),
        "level": "exhausted" if share >= 1 else "warning" if share >= WARNING_SHARE else "ok",
    }


def calendar_month(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month containing `moment`, as [start, end)."""
    moment = moment.astimezone(UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` shifted by whole months, the day clamped to the month's last (Jan 31 + 1 month = Feb 28/29),
    as Stripe bills monthly subscriptions."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    first_of_next = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=moment.tzinfo)
    last_day = (first_of_next - timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def billing_month(anchor: datetime, moment: datetime) -> tuple[datetime, datetime]:
    """The monthly period, counted from `anchor` (a subscription's), that contains `moment`, as [start, end)."""
    months = (moment.year - anchor.year) * 12 + moment.month - anchor.month
    start = add_months(anchor, months)
    while start > moment:
        months -= 1
        start = add_months(anchor, months)
    while add_months(anchor, months + 1) <= moment:
        months += 1
        start = add_months(anchor, months)
    return start, add_months(anchor, months + 1)


def period_dates(*, cycle_anchor: datetime | None, moment: datetime) -> tuple[datetime, datetime]:
    """The dates of the period containing `moment`: the subscription's month for paying users (I6),
    the calendar month for everyone else."""
    return billing_month(cycle_anchor, moment) if cycle_anchor else calendar_month(moment)


def quota_period_at(*, user, moment: datetime) -> QuotaPeriod | None:
    return QuotaPeriod.objects.filter(user=user).containing(moment).order_by("-start").first()


def default_plan() -> Plan:
    return Plan.objects.get(is_default=True)


def plan_for(*, user) -> Plan:
    user_plan = UserPlan.objects.select_related("plan").filter(user=user).first()
    return user_plan.plan if user_plan else default_plan()


def plan_and_period(*, user) -> tuple[Plan, QuotaPeriod]:
    """The user's plan and current period. Reading never writes: a period not started yet is returned
    unsaved, with the full allowance."""
    user_plan = UserPlan.objects.select_related("plan").filter(user=user).first()
    plan = user_plan.plan if user_plan else default_plan()
    now = timezone.now()
    period = quota_period_at(user=user, moment=now)
    if period is None:
        start, end = period_dates(cycle_anchor=user_plan and user_plan.cycle_anchor, moment=now)
        period = QuotaPeriod(
            user=user, start=start, end=end, allowance=plan.period_token_limit, metered_after=plan.metered_after
        )
    return plan, period


@dataclass(frozen=True)
class DayUsage:
    day: date
    tokens: int
    requests: int


def usage_by_day(*, user, start, end) -> list[DayUsage]:
    """Tokens counted against the user's allowance per UTC day in [start, end), every day of the period
    present (zero when idle)."""
    rows = (
        UsageRecord.objects.filter(user=user, created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(tokens=Sum("billable_tokens"), requests=Count("id"))
    )
    by_day = {row["day"]: row for row in rows}
    days, day = [], start.date()
    while day < end.date():
        row = by_day.get(day)
        days.append(DayUsage(day, row["tokens"] if row else 0, row["requests"] if row else 0))
        day += timedelta(days=1)
    return days


def usage_by_model(*, user, start, end) -> list[dict]:
    return list(
        UsageRecord.objects.filter(user=user, created_at__gte=start, created_at__lt=end)
        .values("model")
        .annotate(
            requests=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            billable_tokens=Sum("billable_tokens"),
        )
        .order_by("-billable_tokens", "model")
    )


def account_summary(*, user) -> dict:
    """A user's plan, current period (as it would be, if not started yet), usage and API keys, as JSON for
    operators and scripts (manage.py usage_show)."""
    plan, period = plan_and_period(user=user)
    suspended = UserPlan.objects.filter(user=user, suspended_at__isnull=False).exists()
    keys = ApiKey.objects.filter(user=user).order_by("pk")
    return {
        "user": {"id": user.pk, "email": user.email, "active": user.is_active, "suspended": suspended},
        "plan": {"slug": plan.slug, "name": plan.name},
        "period": {
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "allowance": period.allowance,
            "bonus_tokens": period.bonus_tokens,
            "used": period.used,
            "reserved": period.reserved,
            "remaining": max(0, period.allowance - period.used - period.reserved),
            "cost_usd": str(period.cost),
            "requests": UsageRecord.objects.filter(period_id=period.pk).count() if period.pk else 0,
        },
        "api_keys": [
            {
                "id": key.pk,
                "name": key.name,
                "prefix": key.prefix,
                "revoked": key.revoked_at is not None,
                "last_used_at": key.last_used_at and key.last_used_at.isoformat(),
            }
            for key in keys
        ],
    }

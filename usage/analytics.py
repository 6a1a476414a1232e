"""Reads for staff's token analytics (the admin). Everything about tokens and cost comes from the UsageDaily
rollup, never from a scan of the raw usage records, so a page costs the same few queries at any volume."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from usage.charts import bar_chart
from usage.models import ModerationEvent, Plan, SpendDay, UsageDaily, UsageRecord, UserPlan
from usage.selectors import plan_and_period, quota_meter

HEAVIEST_USERS = 25
RECENT_REQUESTS = 20


@dataclass(frozen=True)
class Scope:
    """What the analytics page shows: UTC days [first_day, last_day], optionally one plan's users, one model."""

    first_day: date
    last_day: date
    plan: Plan | None = None
    model: str = ""

    @classmethod
    def from_query(cls, query) -> tuple["Scope", list[str]]:
        """The scope from ?start=&end=&plan=&model=, defaulting to this month; problems come back as messages
        (a bad date falls back to the default, it never fails the page)."""
        today = timezone.now().date()
        problems = []
        first_day, last_day = today.replace(day=1), today
        for name, default in (("start", first_day), ("end", last_day)):
            raw = query.get(name, "")
            try:
                value = date.fromisoformat(raw) if raw else default
            except ValueError:
                problems.append(f"'{raw}' is not a date (YYYY-MM-DD): showing {default} instead.")
                value = default
            if name == "start":
                first_day = value
            else:
                last_day = value
        if first_day > last_day:
            problems.append("The start is after the end: they were swapped.")
            first_day, last_day = last_day, first_day
        plan = Plan.objects.filter(slug=query.get("plan", "")).first() if query.get("plan") else None
        return cls(first_day, last_day, plan, query.get("model", "")[:100]), problems

    @property
    def moments(self) -> tuple[datetime, datetime]:
        """The scope as [start, end) datetimes, for tables indexed by time."""
        return (
            datetime.combine(self.first_day, time.min, UTC),
            datetime.combine(self.last_day + timedelta(days=1), time.min, UTC),
        )

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=n) for n in range((self.last_day - self.first_day).days + 1)]

    def day_model_rollups(self):
        """Per day and model: the service-wide rollup (a few rows a day) unless a plan is chosen, which needs
        the per-user one."""
        if self.plan is not None:
            return self.rollups()
        rows = SpendDay.objects.filter(day__gte=self.first_day, day__lte=self.last_day)
        return rows.filter(model=self.model) if self.model else rows

    def rollups(self):
        rows = UsageDaily.objects.filter(day__gte=self.first_day, day__lte=self.last_day)
        if self.plan is not None:
            rows = rows.filter(user__user_plan__plan=self.plan)
        if self.model:
            rows = rows.filter(model=self.model)
        return rows


_SUMS = {
    "requests": Coalesce(Sum("requests"), 0),
    "cached_requests": Coalesce(Sum("cached_requests"), 0),
    "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
    "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    "cost": Coalesce(Sum("cost"), Decimal(0)),
}


def overview(scope: Scope, *, heaviest: int = HEAVIEST_USERS) -> dict:
    """The analytics page's numbers from two grouped reads of the rollups: per (day, model), which gives the
    days, the models and the totals; and per user, which gives the heaviest users, their share and the
    number of active users."""
    by_day_model = list(scope.day_model_rollups().values("day", "model").annotate(**_SUMS).order_by())
    totals = {name: sum(row[name] for row in by_day_model) for name in _SUMS}
    totals["cost"] = Decimal(totals["cost"])
    totals["tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    totals["cache_hit_rate"] = totals["cached_requests"] / totals["requests"] if totals["requests"] else 0.0
    users, totals["active_users"] = _heaviest_users(scope, heaviest)
    totals["moderation_refusals"] = _moderation_refusals(scope)
    for row in users:
        row["share"] = row["tokens"] / totals["tokens"] if totals["tokens"] else 0.0
    return {
        "totals": totals,
        "days": _per_day(scope, by_day_model),
        "models": _per_model(by_day_model),
        "heaviest": users,
    }


def _per_day(scope: Scope, rows: list[dict]) -> list[dict]:
    """Every day of the scope (zero when idle): requests, tokens and cost."""
    days = {day: {"day": day, "requests": 0, "tokens": 0, "cost": Decimal(0)} for day in scope.days}
    for row in rows:
        day = days[row["day"]]
        day["requests"] += row["requests"]
        day["tokens"] += row["prompt_tokens"] + row["completion_tokens"]
        day["cost"] += row["cost"]
    return list(days.values())


def _per_model(rows: list[dict]) -> list[dict]:
    models: dict[str, dict] = {}
    for row in rows:
        model = models.setdefault(row["model"], {"model": row["model"], **dict.fromkeys(_SUMS, 0)})
        for name in _SUMS:
            model[name] += row[name]
    for model in models.values():
        model["tokens"] = model["prompt_tokens"] + model["completion_tokens"]
    return sorted(models.values(), key=lambda m: (-m["cost"], m["model"]))


def _heaviest_users(scope: Scope, limit: int) -> tuple[list[dict], int]:
    """The `limit` users with the most tokens, and how many users were active at all: one pass over the
    scope's rows (the per-user sums are computed once, then counted and ranked)."""
    per_user = (
        scope.rollups()
        .values("user_id")
        .annotate(
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            requests=Sum("requests"),
            cost=Sum("cost"),
        )
        .order_by()
    )
    inner_sql, params = per_user.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH per_user AS MATERIALIZED ({inner_sql}) "  # noqa: S608 (Django's SQL)
            "SELECT per_user.*, (SELECT COUNT(*) FROM per_user) FROM per_user "
            "ORDER BY per_user.prompt_tokens + per_user.completion_tokens DESC, per_user.user_id LIMIT %s",
            [*params, limit],
        )
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    active = int(rows[0][names[-1]]) if rows else 0
    users = {
        user.pk: user
        for user in get_user_model()
        .objects.filter(pk__in=[row["user_id"] for row in rows])
        .select_related("user_plan__plan")
    }
    for row in rows:
        # Raw sums: PostgreSQL gives numeric (Decimal) for sums of integers.
        for name in ("prompt_tokens", "completion_tokens", "requests"):
            row[name] = int(row[name])
        row["tokens"] = row["prompt_tokens"] + row["completion_tokens"]
        user = users.get(row["user_id"])
        row["email"] = user.email if user else "(deleted)"
        user_plan = getattr(user, "user_plan", None) if user else None
        row["plan"] = user_plan.plan.name if user_plan else ""
    return rows, active


def _moderation_refusals(scope: Scope) -> int:
    start, end = scope.moments
    refusals = ModerationEvent.objects.filter(created_at__gte=start, created_at__lt=end)
    if scope.plan is not None:
        refusals = refusals.filter(user__user_plan__plan=scope.plan)
    return refusals.count()


def day_charts(days: list[dict]) -> dict:
    return {
        "tokens": bar_chart([(d["day"].strftime("%b %-d"), d["tokens"]) for d in days]),
        "cost": bar_chart([(d["day"].strftime("%b %-d"), d["cost"]) for d in days]),
    }


def models_in_use() -> list[str]:
    from llm.provider import model_catalogue

    return [model.id for model in model_catalogue().models]


# --- one user -------------------------------------------------------------------------------------------------


def user_overview(user, *, first_day: date, last_day: date) -> dict:
    """Everything the per-user analytics page shows."""
    scope = Scope(first_day, last_day)
    rollups = scope.rollups().filter(user=user)
    days = _per_day(scope, list(rollups.values("day").annotate(**_SUMS).order_by()))
    models = list(rollups.values("model").annotate(**_SUMS).order_by("-cost", "model"))
    plan, period = plan_and_period(user=user)
    user_plan = UserPlan.objects.filter(user=user).first()
    return {
        "days": days,
        "charts": day_charts(days),
        "models": models,
        "totals": rollups.aggregate(**_SUMS),
        "plan": plan,
        "period": period,
        "meter": quota_meter(period=period),
        "suspended_at": user_plan.suspended_at if user_plan else None,
        "recent_requests": list(UsageRecord.objects.filter(user=user).order_by("-created_at")[:RECENT_REQUESTS]),
        "moderation_events": list(ModerationEvent.objects.filter(user=user).order_by("-created_at")[:10]),
        "moderation_count": ModerationEvent.objects.filter(user=user).count(),
    }

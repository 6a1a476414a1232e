"""Reads for staff's token analytics (the admin). Everything about tokens and cost comes from the UsageDaily
rollup, never from a scan of the raw usage records, so a page costs the same few queries at any volume."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from usage.charts import bar_chart
from usage.models import ModerationEvent, Plan, UsageDaily, UsageRecord, UserPlan
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


def totals(scope: Scope) -> dict:
    row = scope.rollups().aggregate(**_SUMS, active_users=Count("user", distinct=True))
    row["tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    row["cache_hit_rate"] = row["cached_requests"] / row["requests"] if row["requests"] else 0.0
    start, end = scope.moments
    refusals = ModerationEvent.objects.filter(created_at__gte=start, created_at__lt=end)
    if scope.plan is not None:
        refusals = refusals.filter(user__user_plan__plan=scope.plan)
    row["moderation_refusals"] = refusals.count()
    return row


def per_day(scope: Scope) -> list[dict]:
    """Every day of the scope (zero when idle): tokens and cost."""
    by_day = {
        row["day"]: row
        for row in scope.rollups().values("day").annotate(**_SUMS).order_by("day")
    }  # fmt: skip
    days = []
    for day in scope.days:
        row = by_day.get(day) or {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": Decimal(0)}
        days.append(
            {"day": day, "requests": row["requests"], "tokens": row["prompt_tokens"] + row["completion_tokens"],
             "cost": row["cost"]}
        )  # fmt: skip
    return days


def day_charts(days: list[dict]) -> dict:
    return {
        "tokens": bar_chart([(d["day"].strftime("%b %-d"), d["tokens"]) for d in days]),
        "cost": bar_chart([(d["day"].strftime("%b %-d"), d["cost"]) for d in days]),
    }


def by_model(scope: Scope) -> list[dict]:
    rows = list(scope.rollups().values("model").annotate(**_SUMS).order_by("-cost", "model"))
    for row in rows:
        row["tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    return rows


def heaviest_users(scope: Scope, *, limit: int = HEAVIEST_USERS) -> list[dict]:
    """The users with the most tokens in the scope, with their share of all tokens, plan and requests."""
    rows = list(
        scope.rollups()
        .values("user_id")
        .annotate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")))  # before the sums take the names
        .annotate(**_SUMS)
        .order_by("-tokens", "user_id")[:limit]
    )
    everything = totals_tokens(scope)
    users = {
        user.pk: user
        for user in get_user_model()
        .objects.filter(pk__in=[row["user_id"] for row in rows])
        .select_related("user_plan__plan")
    }
    for row in rows:
        user = users.get(row["user_id"])
        row["email"] = user.email if user else "(deleted)"
        plan_row = getattr(user, "user_plan", None) if user else None
        row["plan"] = plan_row.plan.name if plan_row else ""
        row["share"] = row["tokens"] / everything if everything else 0.0
    return rows


def totals_tokens(scope: Scope) -> int:
    row = scope.rollups().aggregate(tokens=Coalesce(Sum(F("prompt_tokens") + F("completion_tokens")), 0))
    return row["tokens"]


def satisfaction_by_model(scope: Scope) -> list[dict]:
    """Thumbs up and down on answers given in the scope, per model (feedback is rare: read directly)."""
    from chat.models import Feedback

    start, end = scope.moments
    feedback = Feedback.objects.filter(message__created_at__gte=start, message__created_at__lt=end)
    if scope.plan is not None:
        feedback = feedback.filter(user__user_plan__plan=scope.plan)
    if scope.model:
        feedback = feedback.filter(message__model=scope.model)
    rows = list(
        feedback.values(model=F("message__model"))
        .annotate(up=Count("id", filter=Q(rating=1)), down=Count("id", filter=Q(rating=-1)))
        .order_by("model")
    )
    for row in rows:
        row["satisfaction"] = row["up"] / (row["up"] + row["down"]) if row["up"] + row["down"] else None
    return rows


def models_in_use() -> list[str]:
    from chat.llm import model_catalogue

    return [model.id for model in model_catalogue().models]


# --- one user -------------------------------------------------------------------------------------------------


def user_overview(user, *, first_day: date, last_day: date) -> dict:
    """Everything the per-user analytics page shows."""
    from chat.models import Conversation, Feedback

    scope = Scope(first_day, last_day)
    rollups = scope.rollups().filter(user=user)
    by_day = {row["day"]: row for row in rollups.values("day").annotate(**_SUMS)}
    days = []
    for day in scope.days:
        row = by_day.get(day)
        tokens = (row["prompt_tokens"] + row["completion_tokens"]) if row else 0
        days.append({"day": day, "tokens": tokens, "cost": row["cost"] if row else Decimal(0)})
    models = list(rollups.values("model").annotate(**_SUMS).order_by("-cost", "model"))
    plan, period = plan_and_period(user=user)
    user_plan = UserPlan.objects.filter(user=user).first()
    feedback = Feedback.objects.filter(user=user)
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
        "conversations": Conversation.objects.filter(user=user).count(),
        "feedback": feedback.aggregate(up=Count("id", filter=Q(rating=1)), down=Count("id", filter=Q(rating=-1))),
        "recent_feedback": list(feedback.select_related("message").order_by("-created_at")[:10]),
        "moderation_events": list(ModerationEvent.objects.filter(user=user).order_by("-created_at")[:10]),
        "moderation_count": ModerationEvent.objects.filter(user=user).count(),
    }


def satisfaction_by_user(scope: Scope, user_ids: list[int]) -> dict[int, dict]:
    """Thumbs up/down per user, for the heaviest users table."""
    from chat.models import Feedback

    start, end = scope.moments
    rows = (
        Feedback.objects.filter(user_id__in=user_ids, message__created_at__gte=start, message__created_at__lt=end)
        .values("user_id")
        .annotate(up=Count("id", filter=Q(rating=1)), down=Count("id", filter=Q(rating=-1)))
    )
    return {row["user_id"]: row for row in rows}

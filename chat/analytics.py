"""Staff analytics of the chat: the thumbs up and down on answers (the admin's token analytics pages,
aisaas.admin_views). Feedback is rare: read directly, not from a rollup."""

from django.db.models import Count, F, Q

from chat.models import Conversation, Feedback
from usage.analytics import Scope


def satisfaction_by_model(scope: Scope) -> list[dict]:
    """Thumbs up and down on answers given in the scope, per model (feedback is rare: read directly)."""
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


def satisfaction_by_user(scope: Scope, user_ids: list[int]) -> dict[int, dict]:
    """Thumbs up/down per user, for the heaviest users table."""
    start, end = scope.moments
    rows = (
        Feedback.objects.filter(user_id__in=user_ids, message__created_at__gte=start, message__created_at__lt=end)
        .values("user_id")
        .annotate(up=Count("id", filter=Q(rating=1)), down=Count("id", filter=Q(rating=-1)))
    )
    return {row["user_id"]: row for row in rows}


def feedback_overview(user) -> dict:
    """One user's conversations and feedback, for their analytics page."""
    feedback = Feedback.objects.filter(user=user)
    return {
        "conversations": Conversation.objects.filter(user=user).count(),
        "feedback": feedback.aggregate(up=Count("id", filter=Q(rating=1)), down=Count("id", filter=Q(rating=-1))),
        "recent_feedback": list(feedback.select_related("message").order_by("-created_at")[:10]),
    }

from django.db.models import F

from chat.models import Conversation, Message
from core.errors import NotFound

SIDEBAR_CONVERSATIONS = 200


def conversation_list(*, user) -> tuple[list[dict], bool]:
    """The user's SIDEBAR_CONVERSATIONS most recently active conversations (served by the (user, -updated_at)
    index), and whether there are older ones (the page fetches those from the REST API when asked)."""
    conversations = list(
        Conversation.objects.filter(user=user)
        .order_by("-updated_at", "-id")
        .values("id", "title", "updated_at")[: SIDEBAR_CONVERSATIONS + 1]
    )
    return conversations[:SIDEBAR_CONVERSATIONS], len(conversations) > SIDEBAR_CONVERSATIONS


def conversation_get(*, user, conversation_id, for_update: bool = False) -> Conversation:
    """The user's conversation, or NotFound: the same answer for a missing id and for someone else's."""
    queryset = Conversation.objects.filter(user=user)
    if for_update:
        queryset = queryset.select_for_update()
    try:
        return queryset.get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        raise NotFound("Conversation not found.") from None


def message_list(*, conversation: Conversation) -> list[dict]:
    return list(
        conversation.messages.order_by("created_at", "id").values(
            "id",
            "role",
            "content",
            "status",
            "model",
            "error_code",
            "created_at",
            "content_purged_at",
            rating=F("feedback__rating"),
        )
    )


def history_for_prompt(*, conversation: Conversation, limit: int, before: Message | None = None) -> list[dict]:
    """The latest `limit` finished messages (those older than `before`, if given) as provider messages, oldest
    first. Failed and empty replies are left out."""
    messages = conversation.messages.exclude(content="").filter(
        status__in=[Message.Status.COMPLETE, Message.Status.STOPPED]
    )
    if before is not None:
        messages = messages.filter(id__lt=before.pk)
    rows = messages.order_by("-created_at", "-id").values("role", "content")[:limit]
    return [{"role": row["role"], "content": row["content"]} for row in reversed(rows)]

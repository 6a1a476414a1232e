"""Events to a user's open chat pages (other tabs and devices), through the channel layer.

Sent on commit by the services that change state, so a rolled-back change is never announced.
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction


def user_group(user_id: int) -> str:
    return f"chat.user.{user_id}"


def send_to_user_on_commit(user_id: int, event: dict) -> None:
    def send():
        async_to_sync(get_channel_layer().group_send)(user_group(user_id), {"type": "chat.event", "event": event})

    transaction.on_commit(send)

"""Events to a user's open chat pages (other tabs and devices), through the channel layer.

Sent by the services that change state, after their transaction committed, so a rolled-back change is never
announced.
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction


def user_group(user_id: int) -> str:
    return f"chat.user.{user_id}"


async def send_to_user(user_id: int, event: dict) -> None:
    """From async code, after the change is committed."""
    await get_channel_layer().group_send(user_group(user_id), {"type": "chat.event", "event": event})


def send_to_user_on_commit(user_id: int, event: dict) -> None:
    """From sync code (a view): sent once the surrounding transaction commits."""
    transaction.on_commit(lambda: async_to_sync(send_to_user)(user_id, event))

"""The wiring on the real Redis: the cache and the channel layer."""

import asyncio

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

from core.channels import OutageTolerantRedisChannelLayer
from tests.chat.conftest import open_socket


def test_cache_lives_in_redis():
    cache.set("shared-key", "shared-value", 30)
    raw = redis.Redis.from_url(settings.REDIS_URL)
    keys = raw.keys(f"{settings.CACHE_KEY_PREFIX}:*shared-key")
    assert keys and cache.get("shared-key") == "shared-value"


async def test_events_cross_web_processes_through_the_redis_channel_layer():
    """Two layer instances stand for two daphne processes: a tab on one gets the event sent from the other."""
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    process_a, process_b = OutageTolerantRedisChannelLayer(**config), OutageTolerantRedisChannelLayer(**config)
    channel = await process_a.new_channel()
    await process_a.group_add("chat.user.42", channel)
    await process_b.group_send("chat.user.42", {"type": "chat.event", "event": {"type": "conversation", "id": 1}})
    message = await process_a.receive(channel)
    assert message == {"type": "chat.event", "event": {"type": "conversation", "id": 1}}
    await process_a.group_discard("chat.user.42", channel)
    await process_a.flush()
    await process_b.flush()


@pytest.mark.django_db(transaction=True)
async def test_an_idle_chat_socket_outlives_the_layers_blocking_read(user):
    """channels-redis blocks 5 s per read; a shorter socket timeout used to kill every idle tab (1011)."""
    socket, connected, _ = await open_socket(user)
    assert connected
    await asyncio.sleep(6)
    await socket.send({"type": "ping"})
    assert await socket.receive() == {"type": "pong"}
    await socket.communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_burst_of_500_sockets_opening_at_once_loses_none(user):
    """Each socket joins its user's group on the Redis channel layer as it opens: 500 at once need more pooled
    connections than redis-py's default cap, which refuses rather than waits (MaxConnectionsError, close 1011)."""
    opened = await asyncio.gather(*(open_socket(user, timeout=120) for _ in range(500)))
    sockets = [socket for socket, connected, _ in opened if connected]

    assert len(sockets) == 500
    await sockets[0].send({"type": "ping"})
    await sockets[-1].send({"type": "ping"})
    assert await sockets[0].receive() == {"type": "pong"} and await sockets[-1].receive() == {"type": "pong"}
    await asyncio.gather(*(socket.communicator.disconnect() for socket in sockets))

"""The channel layer: channels-redis, made to ride out a Redis outage.

The layer carries only events between a user's open pages (a title changed in another tab); no money and no
answer goes through it. Out of the box, a Redis outage raises out of the layer's receive() and every open socket
closes with 1011, mid-answer too. Here an open socket keeps working (its answer finishes, its next message gets a
retryable refusal from the gate, I8) and only misses the events sent while Redis was down: receive() waits and
tries again with backoff, a failed group join is retried once Redis is back, and a send that fails is logged.
"""

import asyncio
import logging
from collections import defaultdict

from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RECONNECT_FIRST_DELAY_SECONDS = 0.5
RECONNECT_MAX_DELAY_SECONDS = 10.0
_UNREACHABLE = (RedisError, OSError)


class OutageTolerantRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.groups_to_join: dict[str, set[str]] = defaultdict(set)  # channel -> groups its join failed for

    async def receive(self, channel):
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            try:
                await self._join_pending(channel)
                return await super().receive(channel)
            except _UNREACHABLE as error:
                logger.warning("Channel layer unreachable (%s); trying again in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def _join_pending(self, channel):
        for group in list(self.groups_to_join.get(channel, ())):
            await super().group_add(group, channel)
            self.groups_to_join[channel].discard(group)
        self.groups_to_join.pop(channel, None)

    async def group_add(self, group, channel):
        try:
            await super().group_add(group, channel)
        except _UNREACHABLE as error:
            logger.warning("Joining %s failed (%s); joining once the channel layer is back", group, error)
            self.groups_to_join[channel].add(group)

    async def group_discard(self, group, channel):
        self.groups_to_join.get(channel, set()).discard(group)
        if not self.groups_to_join.get(channel):
            self.groups_to_join.pop(channel, None)
        try:
            await super().group_discard(group, channel)
        except _UNREACHABLE as error:  # the membership expires on its own (group_expiry)
            logger.warning("Leaving %s failed (%s)", group, error)

    async def group_send(self, group, message):
        try:
            await super().group_send(group, message)
        except _UNREACHABLE as error:
            logger.warning("An event to %s was lost: the channel layer is unreachable (%s)", group, error)

    async def send(self, channel, message):
        try:
            await super().send(channel, message)
        except _UNREACHABLE as error:
            logger.warning("A message to %s was lost: the channel layer is unreachable (%s)", channel, error)

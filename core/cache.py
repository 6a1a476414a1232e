"""The cache: django-redis, made to ride out a Redis outage.

The cache holds nothing the site cannot do without: allauth's login-attempt counters and their locks, and the
staff spend alert's once-a-day mark. While Redis is down (IGNORE_EXCEPTIONS in settings) a read is a miss and a
write is dropped and logged, so sign-in, history and the rest of the site keep working; paid calls never rely on
it, and their limits fail closed instead (usage.limits, I8).

add() reports success while Redis is down. allauth takes a lock with add() before it counts a login attempt, and
refuses the attempt (429) when it cannot: with django-redis's plain None, nobody could sign in during an outage.
"""

from django_redis.cache import RedisCache, omit_exception


class OutageTolerantRedisCache(RedisCache):
    @omit_exception(return_value=True)
    def add(self, *args, **kwargs):
        return self.client.add(*args, **kwargs)

"""The prompt cache through the gate and the settlement, in the store layouts a deployment can have: the cache
and the rate limits in one Redis (the lookup and the write ride along with the limits' scripts), or apart."""

import os

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from redis.connection import Connection

from aisaas import loop_redis
from aisaas.db import in_db_thread
from tests.usage.conftest import make_plan
from usage import limits, prompt_cache, services

REDIS_URL = os.environ.get("REDIS_URL", "")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs a real Redis: set REDIS_URL (.ci/run does)")

PROMPT = [{"role": "user", "content": "Is this answer cached?"}]
# On PostgreSQL the settlement runs on the event loop's own connection, which must see the admission's rows.
settles = pytest.mark.django_db(transaction=True)
ANSWER = prompt_cache.answer_of(text="It will be.", model="demo-mini", prompt_tokens=12, completion_tokens=4)


def admit(user):
    state = services.gate_state(user=user)
    return services.gate_admit(user=user, state=state, model="demo-mini", prompt=PROMPT, source="chat", cacheable=True)


async def settle_on_loop(admission, cache_answer):
    """As the chat and the API settle, from an event loop (on PostgreSQL: its own connection and Redis client)."""
    return await services.usage_settle_on_loop(
        admission=admission,
        conversation_id=None,
        message_id=None,
        model="demo-mini",
        status="complete",
        prompt_tokens=12,
        completion_tokens=4,
        cache_answer=cache_answer,
    )


settle = async_to_sync(settle_on_loop)


@pytest.fixture
def redis_commands(monkeypatch):
    """The Redis commands sent from here on by any client (threads' and event loops'), by name."""
    sent = []
    sync_send, loop_send = Connection.send_command, loop_redis.LoopConnection.send

    def counting(self, *args, **kwargs):
        sent.append(str(args[0]).upper())
        return sync_send(self, *args, **kwargs)

    def counting_on_loop(self, *parts):
        sent.append(str(parts[0]).upper())
        return loop_send(self, *parts)

    monkeypatch.setattr(Connection, "send_command", counting)
    monkeypatch.setattr(loop_redis.LoopConnection, "send", counting_on_loop)
    return sent


@settles
def test_a_settled_answer_is_found_by_the_next_identical_request(user):
    services.plan_change(user=user, plan=make_plan())
    first = admit(user)
    settle(first, ANSWER)

    second = admit(user)

    assert first.cached_answer is None and second.cached_answer == ANSWER
    assert second.cache_key == first.cache_key


@needs_redis
@settles
async def test_with_one_redis_the_cache_rides_along_two_round_trips_per_message(user, redis_commands):
    await in_db_thread(lambda: services.plan_change(user=user, plan=make_plan()))()
    await settle_on_loop(await in_db_thread(admit)(user), ANSWER)  # connects, loads both scripts into Redis
    assert prompt_cache.rides_with_limits()
    redis_commands.clear()

    admission = await in_db_thread(admit)(user)
    after_gate = list(redis_commands)
    await settle_on_loop(admission, ANSWER)

    # The gate: the limits script, which also read the cache (a hit: the answer settled above).
    assert after_gate == ["EVALSHA"] and admission.cached_answer == ANSWER
    # The settlement: the give-back script, which also wrote the answer.
    assert redis_commands == ["EVALSHA", "EVALSHA"]
    cached = await in_db_thread(caches["default"].get)(admission.cache_key)
    assert cached == ANSWER and await in_db_thread(caches["default"].ttl)(admission.cache_key) > 0


@needs_redis
@pytest.mark.django_db
def test_the_limits_script_reads_the_cache_only_for_a_request_it_lets_through(user):
    caches["default"].set("an-answer", ANSWER)
    limit = limits.Limit("requests_per_minute", f"{user.pk}:rpm", 1, 60, 1)
    key, limiter = prompt_cache.store_key("an-answer"), limits.limiter()

    taken, refused = limiter.take([limit], read=key), limiter.take([limit], read=key)

    assert taken.allowed and prompt_cache.decoded(taken.read) == ANSWER
    assert not refused.allowed and refused.read is None


@needs_redis
@settles
def test_with_the_limits_in_another_redis_the_cache_still_works_on_its_own(user, settings, redis_commands):
    assert prompt_cache.rides_with_limits()  # remembered, until CACHES changes:
    server, _, database = REDIS_URL.rpartition("/")
    other = f"{server}/{(int(database or 0) + 1) % 16}"
    settings.CACHES = {**settings.CACHES, "limits": {**settings.CACHES["limits"], "LOCATION": other}}
    caches["limits"].clear()
    services.plan_change(user=user, plan=make_plan())
    assert not prompt_cache.rides_with_limits()

    first = admit(user)
    settle(first, ANSWER)
    second = admit(user)

    assert first.cached_answer is None and second.cached_answer == ANSWER
    assert {"GET", "SET"} <= set(redis_commands)
    caches["limits"].clear()

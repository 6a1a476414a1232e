"""The prompt cache through the gate and the settlement: it lives in the rate limits' Redis, and its lookup and
its write ride along with the limits' scripts."""

import json

import pytest
import redis.asyncio
from django.conf import settings

from core.db import in_db_thread
from tests.usage.conftest import admitted, make_plan, settled
from usage import limits, prompt_cache, services

pytestmark = pytest.mark.django_db(transaction=True)  # the gate's pool sees committed rows only

PROMPT = [{"role": "user", "content": "Is this answer cached?"}]
ANSWER = prompt_cache.answer_of(text="It will be.", model="demo-mini", prompt_tokens=12, completion_tokens=4)


async def admit(user):
    return await admitted(user, prompt=PROMPT, cacheable=True)


async def settle(admission, cache_answer):
    return await settled(admission, prompt_tokens=12, completion_tokens=4, cache_answer=cache_answer)


@pytest.fixture
def redis_commands(monkeypatch):
    """The Redis commands sent from here on by redis-py's asyncio clients, by name."""
    sent = []
    real = redis.asyncio.Redis.execute_command

    async def counting(self, *args, **options):
        sent.append(str(args[0]).upper())
        return await real(self, *args, **options)

    monkeypatch.setattr(redis.asyncio.Redis, "execute_command", counting)
    return sent


@pytest.fixture
async def on_plan(user):
    await in_db_thread(lambda: services.plan_change(user=user, plan=make_plan()))()


async def test_a_settled_answer_is_found_by_the_next_identical_request(user, on_plan):
    first = await admit(user)
    await settle(first, ANSWER)

    second = await admit(user)

    assert first.cached_answer is None and second.cached_answer == ANSWER
    assert second.cache_key == first.cache_key


async def test_the_cache_rides_along_two_round_trips_per_message(user, on_plan, redis_commands):
    await settle(await admit(user), ANSWER)  # connects, loads both scripts into Redis
    redis_commands.clear()

    admission = await admit(user)
    after_gate = list(redis_commands)
    await settle(admission, ANSWER)

    # The gate: the limits script, which also read the cache (a hit: the answer settled above).
    assert after_gate == ["EVALSHA"] and admission.cached_answer == ANSWER
    # The settlement: the give-back script, which also wrote the answer.
    assert redis_commands == ["EVALSHA", "EVALSHA"]
    store = redis.asyncio.Redis.from_url(settings.LIMITS_REDIS_URL)
    assert json.loads(await store.get(admission.cache_key)) == ANSWER
    assert 0 < await store.ttl(admission.cache_key) <= settings.PROMPT_CACHE_TTL_SECONDS
    await store.aclose()


async def test_the_limits_script_reads_the_cache_only_for_a_request_it_lets_through(user):
    key = prompt_cache.key_for(user_id=user.pk, model="demo-mini", messages=PROMPT, max_tokens=10)
    store = redis.asyncio.Redis.from_url(settings.LIMITS_REDIS_URL)
    await store.set(key, json.dumps(ANSWER))
    await store.aclose()
    limit = limits.Limit("requests_per_minute", f"{user.pk}:rpm", 1, 60, 1)

    taken = await limits.take([limit], read=key)
    refused = await limits.take([limit], read=key)

    assert taken.allowed and prompt_cache.decoded(taken.read) == ANSWER
    assert not refused.allowed and refused.read is None


def test_an_unreadable_entry_is_a_miss():
    assert prompt_cache.decoded(b"\x80not json") is None
    assert prompt_cache.decoded(b"[1, 2]") is None

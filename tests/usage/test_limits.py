"""GCRA rate limits: the Lua scripts in Redis (usage.limits)."""

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio.connection import Connection

from usage import limits

ROOT = Path(__file__).resolve().parents[2]


def per_minute(limit, cost=1, key="u1:rpm"):
    return limits.Limit("requests_per_minute", key, limit, 60, cost)


async def test_a_burst_up_to_the_limit_passes_then_the_next_is_refused_with_when_to_retry():
    results = [await limits.take([per_minute(3)]) for _ in range(4)]

    assert [result.allowed for result in results] == [True, True, True, False]
    assert [result.remaining for result in results[:3]] == [2, 1, 0]
    refused = results[3]
    assert refused.limit.name == "requests_per_minute" and refused.remaining == 0
    # One request comes back every 60/3 = 20 s.
    assert 19 <= refused.retry_after_seconds <= 20


async def test_a_taken_request_says_when_the_first_limit_is_whole_again():
    tokens_per_day = limits.Limit("tokens_per_day", "u1:tpd", 1000, 86400, 600)
    first = await limits.take([per_minute(3), tokens_per_day])
    second = await limits.take([per_minute(3)])

    # The first limit's clock, not the others': each request of 3 a minute is given back 20 s after it was taken.
    assert 19 <= first.whole_after_seconds <= 20
    assert 39 <= second.whole_after_seconds <= 40 and second.remaining == 1


async def test_a_refusal_says_both_when_the_next_request_passes_and_when_the_limit_is_whole_again():
    for _ in range(3):
        await limits.take([per_minute(3)])

    refused = await limits.take([per_minute(3)])

    assert not refused.allowed
    assert 19 <= refused.retry_after_seconds <= 20  # one of the three comes back every 20 s
    assert 59 <= refused.whole_after_seconds <= 60  # all three are back a minute after they were taken


async def test_all_limits_are_taken_together_or_not_at_all():
    tokens = limits.Limit("tokens_per_day", "u1:tpd", 100, 86400, 60)
    assert (await limits.take([per_minute(10), tokens])).allowed
    refused = await limits.take([per_minute(10), tokens])  # 120 tokens > 100

    assert not refused.allowed and refused.limit.name == "tokens_per_day" and refused.remaining == 40
    # The refused request did not use up a request of the per-minute limit.
    assert (await limits.take([per_minute(10)])).remaining == 8


async def test_giving_back_unused_tokens_makes_room_again():
    tokens = limits.Limit("tokens_per_day", "u1:tpd", 100, 86400, 90)
    assert (await limits.take([tokens])).allowed
    assert not (await limits.take([tokens])).allowed

    await limits.give_back(tokens, 80)  # the call used 10 of the 90 it held

    assert (await limits.take([tokens])).allowed


async def test_a_give_back_for_a_request_counts_once():
    """A settlement may be retried: its give-back, marked with the request's id, gives back only once."""
    tokens = limits.Limit("tokens_per_day", "u1:tpd", 100, 86400, 90)
    assert (await limits.take([tokens])).allowed

    await limits.give_back(tokens, 40, once_for="request-1")
    await limits.give_back(tokens, 40, once_for="request-1")  # the same settlement, retried
    await limits.give_back(tokens, 0, once_for="request-2")  # another request's marker is its own

    # 50 tokens are held: room for 50 more, not 51 (had the retry counted, there would be room for 90).
    assert not (await limits.take([dataclasses.replace(tokens, cost=51)])).allowed
    assert (await limits.take([dataclasses.replace(tokens, cost=50)])).allowed


async def test_limits_are_per_key():
    assert (await limits.take([per_minute(1, key="a:rpm")])).allowed
    assert not (await limits.take([per_minute(1, key="a:rpm")])).allowed
    assert (await limits.take([per_minute(1, key="b:rpm")])).allowed


async def test_the_window_slides():
    limit = limits.Limit("requests_per_minute", "slide", 2, 2, 1)  # 2 in 2 s: one comes back every second
    assert (await limits.take([limit])).allowed and (await limits.take([limit])).allowed
    assert not (await limits.take([limit])).allowed
    await asyncio.sleep(1.1)  # one has come back (and a slow machine has up to 0.9 s before a second would)
    assert (await limits.take([limit])).allowed
    assert not (await limits.take([limit])).allowed


def test_two_processes_share_one_limit():
    """I5: two independent processes (their own Redis connections) racing for one limit of 20 get 20."""
    script = """
import asyncio, django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aisaas.settings")
django.setup()
from usage import limits

limit = limits.Limit("requests_per_minute", "shared:rpm", 20, 60, 1)


async def takes():
    return await asyncio.gather(*(limits.take([limit]) for _ in range(30)))

print(sum(result.allowed for result in asyncio.run(takes())))
"""
    workers = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=os.environ, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    allowed = [int(worker.communicate(timeout=60)[0].strip().splitlines()[-1]) for worker in workers]

    assert sum(allowed) == 20, allowed


async def test_taking_three_limits_is_one_redis_round_trip(monkeypatch):
    await limits.take([per_minute(5)])  # the first call loads the script into Redis
    sent = []
    original = Connection.send_packed_command

    async def counted(self, *args, **kwargs):
        sent.append(args)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", counted)

    result = await limits.take(
        [
            per_minute(5),
            limits.Limit("requests_per_day", "u1:rpd", 50, 86400, 1),
            limits.Limit("tokens_per_day", "u1:tpd", 5000, 86400, 300),
        ]
    )

    assert result.allowed and len(sent) == 1


async def test_an_unreachable_redis_refuses_the_take_and_a_give_back_only_logs(settings, caplog):
    settings.LIMITS_REDIS_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(limits.LimitsUnavailable):
        await limits.take([per_minute(5)])
    tokens = limits.Limit("tokens_per_day", "u1:tpd", 100, 86400, 90)
    assert await limits.give_back(tokens, 80, once_for="request-1") is None  # never raises
    assert "Could not give back 80 to the tokens_per_day limit" in caplog.text

"""PostgreSQL goes away under a web process (daphne, DEBUG off) with paid calls in flight, then comes back.

Every call that produced tokens ends for its client (the answer, `[DONE]`), is accounted exactly once and its
answer saved once the database is back; nothing stays held; new paid calls meanwhile get a retryable refusal;
and after the database is back no request fails on a connection it had dropped.
"""

import asyncio

import httpx2
import pytest

from chat.models import Message
from core.db import in_db_thread
from tests.factories import UserFactory
from tests.faults.conftest import Socket, api_client, production_like, proxied_database_url
from usage.models import QuotaPeriod, UsageRecord
from users import services as user_services

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = [{"role": "user", "content": "Tell me a story"}]


@pytest.fixture
def server(web_process, database_proxy, slow_llm, collected_static):
    return web_process(
        production_like(DATABASE_URL=proxied_database_url(database_proxy), LLM_BASE_URL=f"{slow_llm.url}/v1")
    )


@pytest.fixture
async def customer():
    user = await in_db_thread(UserFactory)()
    key = (await in_db_thread(user_services.api_key_create)(user=user, name="faults"))[1]
    return user, key


async def streamed_answer(client) -> tuple[str, int]:
    """A /v1 streamed answer read to its end: its text and the completion tokens its usage chunk says."""
    stream = await client.chat.completions.create(
        model="demo-mini", messages=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    text, completion_tokens = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            completion_tokens = chunk.usage.completion_tokens
    return text, completion_tokens


@pytest.mark.parametrize("outage_seconds", [2, 30])
async def test_calls_in_flight_when_postgres_goes_away_are_answered_saved_and_accounted_once(
    server, database_proxy, customer, outage_seconds
):
    user, key = customer
    client = api_client(server, key)
    socket = await Socket.open(server, user)
    await socket.send({"type": "message", "conversation": None, "content": "Tell me a story"})
    started = await socket.until("delta")
    streamed = asyncio.ensure_future(streamed_answer(client))
    whole = asyncio.ensure_future(client.chat.completions.create(model="demo-mini", messages=PROMPT))
    await asyncio.sleep(0.8)  # all three are streaming from the provider

    await asyncio.to_thread(database_proxy.cut)
    async with asyncio.timeout(30):
        frames = started + await socket.until("end")
        text, streamed_tokens = await streamed
        answer = await whole

    end = frames[-1]
    chat_text = "".join(frame["content"] for frame in frames if frame["type"] == "delta")
    assert end["status"] == "complete" and end["usage"]["completion_tokens"] == 60
    assert streamed_tokens == 60 and text and answer.usage.completion_tokens == 60
    # A new paid call meanwhile is refused, retryably, and costs nothing.
    refused = (await socket.ask("Anyone there?"))[-1]
    assert (refused["type"], refused["code"], refused["retry_after"]) == ("error", "quota_unavailable", 5)
    async with httpx2.AsyncClient() as http:
        api_refusal = await http.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "demo-mini", "messages": PROMPT},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    assert api_refusal.status_code == 503 and api_refusal.headers["retry-after"] == "5"
    assert api_refusal.json()["error"]["code"] == "quota_unavailable"

    await asyncio.sleep(outage_seconds)
    await asyncio.to_thread(database_proxy.restore)
    async with asyncio.timeout(30):  # the web process replays what it deferred
        while await in_db_thread(UsageRecord.objects.filter(user=user).count)() < 3:
            await asyncio.sleep(0.2)

    records = await in_db_thread(list)(UsageRecord.objects.filter(user=user))
    assert sorted(r.source for r in records) == ["api", "api", "chat"]
    assert all((r.status, r.completion_tokens) == ("complete", 60) for r in records)
    message = await in_db_thread(Message.objects.get)(pk=end["message"])
    assert (message.status, message.content) == ("complete", chat_text)
    period = await in_db_thread(QuotaPeriod.objects.get)(user=user)
    assert period.reserved == 0 and period.used == sum(r.billable_tokens for r in records)
    # The same socket works again, and what is new is saved.
    again = (await socket.ask("And now?"))[-1]
    assert again["status"] == "complete" and again["quota"]["used"] > period.used
    await socket.close()


async def test_after_postgres_restarts_no_request_fails_on_a_connection_it_dropped(server, database_proxy, customer):
    user, key = customer
    client = api_client(server, key)
    socket = await Socket.open(server, user)
    await socket.ask("Warm up")
    await client.chat.completions.create(model="demo-mini", messages=PROMPT)

    await asyncio.to_thread(database_proxy.drop)  # every connection gone at once, as in a restart

    ends = [(await socket.ask(f"Turn {turn}"))[-1] for turn in range(4)]
    assert [end["status"] for end in ends] == ["complete"] * 4, ends
    answers = await asyncio.gather(
        *(client.chat.completions.create(model="demo-mini", messages=PROMPT) for _ in range(3))
    )
    assert all(answer.choices[0].message.content for answer in answers)
    answered = Message.objects.filter(conversation__user=user, role="assistant", status="complete")
    assert await in_db_thread(answered.count)() == 5
    assert await in_db_thread(UsageRecord.objects.filter(user=user).count)() == 9
    await socket.close()

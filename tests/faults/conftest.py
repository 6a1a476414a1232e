"""The fault suite: daphne as in the Procfile, with DEBUG off, reaching PostgreSQL or Redis through what the test
breaks (a proxy it cuts, a Redis server of its own it stops)."""

import asyncio
import json
import os
import subprocess
import sys

import openai
import pytest
import websockets
from django.db import connection
from django.test import Client, override_settings

from core.db import in_db_thread
from tests.faults.proxy import FaultProxy, postgres_upstream
from tests.servers import ROOT, database_url, start_daphne, start_devllm


@pytest.fixture(scope="session")
def collected_static():
    """With DEBUG off the pages name their static files from collectstatic's manifest."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, **production_like(LLM_BASE_URL="http://127.0.0.1:9/v1")},
        check=True,
    )


# The web process's key: the sessions the tests sign in with are signed with it too.
SECRET_KEY = "fault-suite-k3y-with-enough-random-looking-characters-0123456789abcdef"


def production_like(**env: str) -> dict[str, str]:
    """A web process's environment as in production (DEBUG off), with `env` on top."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "CELERY_TASK_ALWAYS_EAGER": "true",  # no worker runs beside it here
        "LLM_API_KEY": "fault-key",
        "LLM_MODELS": "demo-mini:0.15:0.60",
        **env,
    }


@pytest.fixture(scope="module")
def slow_llm():
    """Answers of 60 tokens, 40 ms apart (2.4 s): long enough to break a store mid-answer."""
    server = start_devllm("--tokens", "60", "--interval-ms", "40", "--ttft-ms", "0")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database_proxy(django_db_setup):
    """The test database behind a proxy the test cuts."""
    proxy = FaultProxy(postgres_upstream(connection.settings_dict))
    yield proxy
    proxy.close()


def proxied_database_url(proxy: FaultProxy) -> str:
    settings = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": proxy.port, "OPTIONS": {}}
    return database_url(settings)


def session_cookie(user) -> str:
    """A session of `user` that the web process accepts (signed with its key)."""
    with override_settings(SECRET_KEY=SECRET_KEY):
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value


class Socket:
    """The chat websocket of a server process, as a browser opens it."""

    def __init__(self, connection):
        self.connection = connection

    @classmethod
    async def open(cls, server, user):
        connection = await websockets.connect(
            f"ws://127.0.0.1:{server.port}/ws/chat/",
            origin=server.url,
            additional_headers={"Cookie": f"sessionid={await in_db_thread(session_cookie)(user)}"},
        )
        return cls(connection)

    async def send(self, frame: dict) -> None:
        await self.connection.send(json.dumps(frame))

    async def receive(self, timeout: float = 15) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await self.connection.recv())  # a close raises ConnectionClosed
                if frame["type"] not in ("conversation", "conversation_deleted"):
                    return frame

    async def event(self, timeout: float = 15) -> dict:
        """The next event about the user's conversations (sent to all of their pages)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await self.connection.recv())
                if frame["type"] in ("conversation", "conversation_deleted"):
                    return frame

    async def until(self, *frame_types: str, timeout: float = 30) -> list[dict]:
        frames = [await self.receive(timeout)]
        while frames[-1]["type"] not in frame_types:
            frames.append(await self.receive(timeout))
        return frames

    async def ask(self, content: str, conversation=None) -> list[dict]:
        """The frames of an answer, to its end, or of the refusal."""
        await self.send({"type": "message", "conversation": conversation, "content": content})
        return await self.until("end", "error")

    async def close(self) -> None:
        await self.connection.close()


def api_client(server, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def web_process():
    """start(env): a daphne serving aisaas with `env`, stopped after the test."""
    servers = []

    def start(env: dict[str, str]):
        server = start_daphne(env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()

import inspect
import logging
import os
from importlib import import_module

import pytest
from django.core.cache import caches

from tests.chat.conftest import open_socket
from tests.factories import UserFactory
from tests.servers import start_devllm
from usage import services as usage_services

# Fast, deterministic answers: 12 tokens, 2 ms apart, no time to first token.
DEVLLM_FAST = ("--tokens", "12", "--interval-ms", "2", "--ttft-ms", "0")


def pytest_sessionfinish(session, exitstatus):
    """In CI nothing may skip: a skipped test there means a missing install step or service."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) skipped; every test must run in CI.", red=True)
        session.exitstatus = 1


class _UnclosedProviderClients(logging.Filter):
    """Each async test runs on an event loop of its own, and the provider clients opened on it (aiohttp
    sessions, llm.provider.client_for) are dropped with it unclosed; a server has one loop and keeps them. What
    aiohttp logs about them then says nothing about the code under test."""

    def filter(self, record):
        return not str(record.msg).startswith(("Unclosed client session", "Unclosed connector"))


logging.getLogger("asyncio").addFilter(_UnclosedProviderClients())


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """No persistent connections in tests: the ORM threads of async tests would otherwise keep PostgreSQL
    sessions open, and the test database could not be dropped at the end."""
    from django.db import connections

    connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session", autouse=True)
def _celery_runs_tasks_inline():
    """No worker runs during tests: queued tasks run at once, in the test, and their errors surface."""
    from aisaas.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True


@pytest.fixture(scope="session")
def devllm():
    server = start_devllm(*DEVLLM_FAST)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _llm_settings(settings, devllm):
    """Every test talks to the session's dev LLM over real HTTP, with no fallback unless it asks for one."""
    settings.LLM_BASE_URL = f"{devllm.url}/v1"
    settings.LLM_API_KEY = "test-key"
    settings.LLM_FALLBACK_BASE_URL = ""
    settings.LLM_FALLBACK_MODEL = ""
    settings.LLM_TIMEOUT_SECONDS = 10.0
    settings.LLM_MODELS = ["demo-mini:0.15:0.60", "demo-large:2.50:10.00"]
    settings.LLM_DEFAULT_MODEL = ""


@pytest.fixture(autouse=True)
def _clean_redis():
    """Redis holds allauth's and our rate-limit counters and the prompt cache (the limits' Redis is the cache's
    in tests: one FLUSHDB clears both); no test may inherit another's."""
    caches["default"].clear()
    yield
    caches["default"].clear()


def pytest_collection_modifyitems(items):
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "obj", None)):
            item.fixturenames.append("_loop_clients_closed")


@pytest.fixture
async def _loop_clients_closed():
    """Each async test runs its own event loop; the PostgreSQL pool and the Redis client the gate opened on it
    close with the test, on that loop. (Sync tests that call the gate do it on loops of their own, closed the
    same way: tests.usage.conftest.on_loop.)"""
    yield
    from core.db import loop_pool_close
    from usage.limits import store_close

    await loop_pool_close()
    await store_close()


@pytest.fixture(autouse=True)
def _plans(request):
    """The plans the data migration creates. Transactional tests flush every table after they run, so they
    are put back for each database test."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return
    transactional = marker.kwargs.get("transaction") or (marker.args and marker.args[0])
    request.getfixturevalue("transactional_db" if transactional else "db")
    from usage.models import Plan

    if not Plan.objects.exists():
        billing = import_module("usage.migrations.0004_plan_billing").PLAN_BILLING
        for fields in import_module("usage.migrations.0002_plans").PLANS:
            Plan.objects.create(**fields, **billing.get(fields["slug"], {}))


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
async def chat_socket(user):
    """A signed-in chat websocket on the full ASGI stack."""
    socket, connected, _ = await open_socket(user)
    assert connected
    yield socket
    await socket.communicator.disconnect()


@pytest.fixture
def moderation_requests(monkeypatch):
    """The moderation requests sent to the provider (the real request is still sent), each as (text, how many
    requests the gate had admitted when it was sent)."""
    from usage.services import gate

    requests, admitted = [], []
    real_categories, real_admit = gate.moderation_categories, gate.gate_admit

    def counted_categories(text):
        requests.append((text, len(admitted)))
        return real_categories(text)

    async def recorded_admit(**arguments):
        admission = await real_admit(**arguments)
        admitted.append(admission)
        return admission

    monkeypatch.setattr(gate, "moderation_categories", counted_categories)
    monkeypatch.setattr(usage_services, "gate_admit", recorded_admit)
    return requests

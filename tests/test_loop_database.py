"""The usage gate's own PostgreSQL connections on the event loop (aisaas.db.loop_fetchone / loop_execute)."""

import asyncio

import pytest
from django.db import connection

from aisaas.db import loop_execute, loop_fetchone

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL (.ci/run does)")


async def test_a_burst_of_queries_waits_for_the_loops_few_connections(settings):
    settings.DB_LOOP_CONNECTIONS = 2

    backends = await asyncio.gather(
        *(loop_fetchone("SELECT pg_backend_pid() FROM pg_sleep(0.05)", []) for _ in range(8))
    )

    assert len({pid for (pid,) in backends}) <= 2  # 8 queries, never more than 2 connections
    assert await loop_fetchone("SELECT %s::int + 1", [41]) == (42,)


async def test_each_statement_is_its_own_transaction(user):
    changed = await loop_execute("UPDATE users_user SET name = %s WHERE id = %s", ["Renamed", user.pk])

    assert changed == 1
    await asyncio.to_thread(user.refresh_from_db)  # another connection sees it: committed
    assert user.name == "Renamed"

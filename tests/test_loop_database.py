"""The usage gate's own PostgreSQL pool on the event loop (core.db.loop_fetchone / loop_execute: psycopg's async
connections in a psycopg_pool pool)."""

import asyncio
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest
from django.db import connection

from core.db import loop_execute, loop_fetchone

pytestmark = pytest.mark.django_db(transaction=True)


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


PROBE = "SELECT %s::int * 2 AS loop_prepared_probe"
PREPARED = "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%loop_prepared' || '_probe%%'"


async def test_a_statement_that_comes_again_is_prepared_once_on_its_connection(settings):
    """DB_PREPARE_THRESHOLD (5): PostgreSQL plans a statement the gate runs on every call once per connection."""
    settings.DB_LOOP_CONNECTIONS = 1  # one connection: every statement below runs on it
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]

    assert [await loop_fetchone(PROBE, [n]) for n in range(threshold)] == [(2 * n,) for n in range(threshold)]
    assert await loop_fetchone(PREPARED, []) == (0,)  # below the threshold it runs unprepared
    assert [await loop_fetchone(PROBE, [n]) for n in range(3)] == [(0,), (2,), (4,)]
    assert await loop_fetchone(PREPARED, []) == (1,)  # then once, and reused


async def test_without_prepared_statements_a_transaction_mode_pooler_works(settings, monkeypatch):
    """DB_PREPARE_THRESHOLD=0 (behind pgbouncer in transaction mode, where the next statement may reach another
    server connection): the loop's pool prepares nothing, however often a statement runs."""
    settings.DB_LOOP_CONNECTIONS = 1
    monkeypatch.setitem(
        connection.settings_dict, "OPTIONS", {**connection.settings_dict["OPTIONS"], "prepare_threshold": None}
    )

    assert [await loop_fetchone(PROBE, [n]) for n in range(10)] == [(2 * n,) for n in range(10)]
    assert await loop_fetchone(PREPARED, []) == (0,)


async def test_values_come_back_as_psycopgs_cursor_gives_them_and_a_long_parameter_is_sent_whole(user):
    long_text = "é" * 3_000_000  # several socket buffers: sent in parts as the socket takes them
    row = await loop_fetchone(
        "SELECT %s::text, %s::numeric, %s::timestamptz, %s::date, %s::bool, NULL, length(%s::text)",
        ["text", Decimal("1.50"), datetime(2026, 11, 28, 12, 0, tzinfo=UTC), date(2026, 11, 28), True, long_text],
    )

    assert row == (
        "text",
        Decimal("1.50"),
        datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        date(2026, 11, 28),
        True,
        None,
        3_000_000,
    )
    assert await loop_fetchone("SELECT 1 WHERE false", []) is None
    assert await loop_execute("UPDATE users_user SET name = name WHERE id = %s", [-1]) == 0


async def test_an_sql_error_raises_psycopgs_error_and_the_next_statement_runs(settings):
    settings.DB_LOOP_CONNECTIONS = 1
    with pytest.raises(psycopg.errors.DivisionByZero):
        await loop_fetchone("SELECT 1 / %s", [0])
    with pytest.raises(psycopg.errors.UndefinedTable):
        await loop_execute("UPDATE no_such_table SET x = 1", [])

    assert await loop_fetchone("SELECT %s::int", [7]) == (7,)


async def test_a_connection_the_server_closes_is_not_used_again(settings):
    settings.DB_LOOP_CONNECTIONS = 1
    (first,) = await loop_fetchone("SELECT pg_backend_pid()", [])
    await asyncio.to_thread(_terminate, first)
    await asyncio.sleep(0.2)  # the loop hears the socket close

    (second,) = await loop_fetchone("SELECT pg_backend_pid()", [])
    assert second != first


async def test_a_connection_closed_just_before_a_statement_is_retried_on_a_new_one(settings):
    settings.DB_LOOP_CONNECTIONS = 1
    (first,) = await loop_fetchone("SELECT pg_backend_pid()", [])
    _terminate(first)  # without yielding to the loop: it has not read the close when the statement goes out
    time.sleep(0.2)

    (second,) = await loop_fetchone("SELECT pg_backend_pid()", [])
    assert second != first


def _terminate(pid: int) -> None:
    """End the backend `pid` from a connection of the test's own (Django's connection settings)."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])

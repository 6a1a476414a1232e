"""The websocket keeps working after PostgreSQL drops every connection (a restart, a failover)."""

import pytest
from django.db import connection

from core.db import in_db_thread
from tests.chat.conftest import open_socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def test_runner_pid(user):
    """The backend of the test's own connection (pytest-django flushes the database through it afterwards)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def drop_the_servers_connections(spare: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
            [spare],
        )
        return cursor.fetchone()[0]


async def test_sockets_sign_in_and_chat_after_the_database_dropped_its_connections(user, test_runner_pid):
    first, connected, _ = await open_socket(user)
    assert connected and (await first.ask("before"))[-1]["status"] == "complete"

    await in_db_thread(drop_the_servers_connections)(test_runner_pid)

    assert (await first.ask("after, same socket"))[-1]["status"] == "complete"
    second, connected, _ = await open_socket(user)
    await second.send({"type": "ping"})
    assert connected and await second.receive() == {"type": "pong"}  # signed in, not closed with 4401
    assert (await second.ask("after, new socket"))[-1]["status"] == "complete"
    for socket in (first, second):
        await socket.communicator.disconnect()

"""Database access from async code."""

import functools
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def in_db_thread(func):
    """Run ORM code from async code in the loop's thread pool.

    Each call is one whole unit of work (a transaction at most), so it need not share the single
    thread-sensitive thread: sockets don't queue behind each other. Each pool thread keeps one connection,
    recycled after CONN_MAX_AGE and replaced when it broke.

    Old connections are closed *inside* the call. channels.db.database_sync_to_async closes them around
    it, but with asgiref 3.13 the call runs in a copied context that those checks do not see, so its
    connections were never recycled (measured: PostgreSQL sessions outlived every call).
    """

    @functools.wraps(func)
    def run(*args, **kwargs):
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)


def transaction_lock(name: str) -> None:
    """Inside a transaction: wait for the lock called `name` and hold it until the transaction ends, so one
    process at a time runs what follows (a PostgreSQL advisory lock). SQLite needs none: its write
    transactions (BEGIN IMMEDIATE, see settings) already run one at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])


def db_datetime(value) -> datetime:
    """A raw query's datetime column: PostgreSQL gives an aware datetime, SQLite a string in UTC."""
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    return parse_datetime(value).replace(tzinfo=UTC)

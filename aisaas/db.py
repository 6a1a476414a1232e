"""Database access from async code."""

import contextlib
import functools

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection


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


@contextlib.contextmanager
def statement_batch():
    """Send the statements executed inside to the database together: one round trip on PostgreSQL
    (psycopg's pipeline mode; results can be fetched after the block), one by one elsewhere. None of them
    may depend on another's result in Python."""
    if connection.vendor != "postgresql":
        yield
        return
    connection.ensure_connection()
    with connection.connection.pipeline():
        yield

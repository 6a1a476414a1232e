"""Database access from async code: ORM units of work in a thread (in_db_thread), and the few statements that run
before and after every paid call on the event loop itself (loop_fetchone, loop_execute)."""

import asyncio
import functools
import weakref
from datetime import UTC, datetime

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections
from django.utils import timezone
from psycopg_pool import AsyncConnectionPool, PoolTimeout


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
    process at a time runs what follows (a PostgreSQL advisory lock)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])


def db_datetime(value: datetime) -> datetime:
    """A raw query's timestamp column as an aware datetime (UTC)."""
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


# The usage gate and the settlement run before and after every paid call, and they query from the event loop
# itself rather than through in_db_thread: a thread hop costs more than the statement before the thread even
# runs, and the thread then waits for the interpreter lock while the loop works on other requests
# (docs/performance.md). On the loop, the gate's waits for PostgreSQL and Redis overlap that work instead.
LoopDatabaseError = psycopg.Error
# The part of those that means PostgreSQL could not be reached (a connection refused or lost, no pooled connection
# in time): the statement may be tried again later, unlike one PostgreSQL refused.
LoopDatabaseUnreachable = psycopg.OperationalError

# One pool per event loop: psycopg's async connections belong to the loop they were opened on (a server has one
# loop; the tests run a loop per test).
_loop_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool]" = weakref.WeakKeyDictionary()
# How long a statement waits for a connection: far longer than a burst's queue (a statement takes well under a
# millisecond), short enough that a paid call is refused promptly while PostgreSQL cannot be reached (I8).
LOOP_CONNECTION_WAIT_SECONDS = 3.0


def _connection_kwargs() -> dict:
    """Django's own connection parameters (its adapters, the prepared-statement setting: DB_PREPARE_THRESHOLD),
    in autocommit: each statement is its own transaction."""
    params = connections[DEFAULT_DB_ALIAS].get_connection_params()
    params.pop("cursor_factory")  # Django's sync cursor class; psycopg's async cursor binds on the server
    return {**params, "autocommit": True}


async def _loop_pool() -> AsyncConnectionPool:
    loop = asyncio.get_running_loop()
    pool = _loop_pools.get(loop)
    if pool is None:
        pool = _loop_pools[loop] = AsyncConnectionPool(
            kwargs=_connection_kwargs(),
            min_size=1,
            max_size=settings.DB_LOOP_CONNECTIONS,
            timeout=LOOP_CONNECTION_WAIT_SECONDS,
            open=False,
            name="aisaas-loop",
        )
        await pool.open()
    return pool


async def _on_loop(run):
    """`run(cursor)` on a connection of this loop's pool. A pooled connection that the server has closed (a
    restart, a failover) fails before running anything: the pool drops it, checks its other idle connections
    (dropping those the server closed too), and the statement runs once more. A second failure is an outage,
    raised."""
    pool = await _loop_pool()
    for attempt in (1, 2):
        try:
            async with pool.connection() as pooled:
                return await run(pooled.cursor())
        except psycopg.OperationalError as error:
            if attempt == 2 or isinstance(error, PoolTimeout):
                raise
            await pool.check()


async def loop_fetchone(sql: str, params: list) -> tuple | None:
    """The first row of a query run from the event loop (raises LoopDatabaseError)."""

    async def fetchone(cursor: psycopg.AsyncCursor):
        await cursor.execute(sql, params)
        return await cursor.fetchone()

    return await _on_loop(fetchone)


async def loop_execute(sql: str, params: list) -> int:
    """Run one statement from the event loop (its own transaction); returns the rows it changed."""

    async def execute(cursor: psycopg.AsyncCursor):
        await cursor.execute(sql, params)
        return cursor.rowcount

    return await _on_loop(execute)


async def loop_pool_close() -> None:
    """Close this event loop's pool, for code that ends a loop it made (the tests, bench/): a finished loop's
    connections would otherwise stay open until the garbage collector finds them."""
    pool = _loop_pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()

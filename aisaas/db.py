"""Database access from async code."""

import asyncio
import contextlib
import functools
import select
import weakref
from datetime import UTC, datetime

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections
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


# The usage gate runs before every paid call, and on PostgreSQL it queries from the event loop itself rather
# than through in_db_thread: a thread hop costs ~1 ms before the thread even runs, and the thread then waits
# for the interpreter lock while the loop works on the moderation request sent alongside (docs/performance.md).
# On the loop, the gate's waits for PostgreSQL and Redis overlap that work instead.
LoopDatabaseError = psycopg.Error


class _LoopPool:
    """An event loop's connections: the idle ones, and a slot for each connection that may exist at once."""

    def __init__(self):
        self.idle: list[psycopg.AsyncConnection] = []
        self.slots = asyncio.Semaphore(settings.DB_LOOP_CONNECTIONS)


_loop_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool]" = weakref.WeakKeyDictionary()


def loop_queries_supported() -> bool:
    """Whether the database can be queried from the event loop (loop_fetchone, loop_execute): PostgreSQL."""
    return connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


def _idle_and_open(pg) -> bool:
    """An idle connection has nothing to read: if it has, the server closed it (a restart, a failover)."""
    return not (pg.closed or pg.broken or select.select([pg.fileno()], [], [], 0)[0])


@contextlib.asynccontextmanager
async def _loop_connection(*, fresh: bool):
    """One of this event loop's own PostgreSQL connections (autocommit, Django's connection settings), given
    back for the next query when this one went well and closed when it did not. Yields it and whether it
    was used before."""
    loop = asyncio.get_running_loop()
    if loop not in _loop_pools:
        _loop_pools[loop] = _LoopPool()
    pool = _loop_pools[loop]
    async with pool.slots:  # a burst of requests waits here rather than opening connections without bound
        pg = None
        while pool.idle and pg is None and not fresh:
            candidate = pool.idle.pop()
            if _idle_and_open(candidate):
                pg = candidate
            else:
                await candidate.close()
        if fresh and pool.idle:  # keep within the slots: this one is replaced by a new connection
            await pool.idle.pop().close()
        reused = pg is not None
        if pg is None:
            params = connections[DEFAULT_DB_ALIAS].get_connection_params()
            params.pop("cursor_factory")  # Django's sync cursor; the async one binds parameters server-side too
            pg = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        try:
            yield pg, reused
        except BaseException:
            await pg.close()
            raise
        pool.idle.append(pg)


async def _on_loop(run):
    """`run(connection)` on a loop connection. A reused connection the server has just closed (a restart, a
    failover, faster than _idle_and_open can tell) fails before running anything: then once more on a new
    one. A new connection that fails is an outage, raised."""
    reused = False
    try:
        async with _loop_connection(fresh=False) as (pg, reused):
            return await run(pg)  # on an error the connection is closed, not given back
    except psycopg.OperationalError:
        if not reused:
            raise
    async with _loop_connection(fresh=True) as (pg, _):
        return await run(pg)


async def loop_fetchone(sql: str, params: list) -> tuple | None:
    """The first row of a query run from the event loop (PostgreSQL; raises LoopDatabaseError)."""

    async def fetch(pg):
        return await (await pg.execute(sql, params)).fetchone()

    return await _on_loop(fetch)


async def loop_execute(sql: str, params: list) -> int:
    """Run one statement from the event loop (its own transaction); returns the rows it changed."""

    async def execute(pg):
        return (await pg.execute(sql, params)).rowcount

    return await _on_loop(execute)


def loop_connections_close() -> None:
    """Close every event loop's idle connections, for code that runs many loops in one process (the tests):
    a finished loop's connections would otherwise stay open until the garbage collector finds them."""
    for pool in list(_loop_pools.values()):
        while pool.idle:
            pool.idle.pop().pgconn.finish()

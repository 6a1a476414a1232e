"""Database access from async code."""

import asyncio
import contextlib
import functools
import weakref
from datetime import UTC, datetime

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from psycopg import pq
from psycopg._queries import PostgresQuery  # what psycopg's cursor uses: the same conversion, pinned version
from psycopg.adapt import Transformer


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
    if database_vendor() == "postgresql":
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


class _LoopConnection:
    """One of an event loop's PostgreSQL connections (autocommit, Django's connection settings), driven
    through libpq (psycopg.pq) rather than psycopg's async cursor. The gate and the settlement run one
    statement each per message, and the cursor's machinery (its preparation manager, its waits that add and
    remove the socket from the loop every time) cost our process about as much CPU as the statement's own round
    trip: 205 µs against 117 µs for the gate's statement measured alone (docs/performance.md). Parameters and
    rows are still adapted by psycopg (its Transformer, with Django's loaders), so values are exactly what
    psycopg's cursor would give.

    The socket stays registered with the loop while the connection lives: a server that closes an idle
    connection (a restart, a failover) is noticed at once, and the connection is not handed out again."""

    PREPARED_MAX = 64  # statements prepared per connection; others run unprepared (planned each time)

    def __init__(self, pg: psycopg.AsyncConnection):
        self.pg, self.pgconn = pg, pg.pgconn
        self.pgconn.nonblocking = 1
        self.socket = self.pgconn.socket
        self.transformer = Transformer(pg)
        self.prepared: dict[tuple, bytes] = {}  # (SQL, parameter types) -> the prepared statement's name
        self.seen: set[tuple] = set()  # run once unprepared: prepared when they come again
        self.loop = asyncio.get_running_loop()
        self.readable: asyncio.Future | None = None  # while a statement waits for its results
        self.lost: psycopg.Error | None = None
        self.loop.add_reader(self.socket, self._on_readable)

    @classmethod
    async def connect(cls) -> "_LoopConnection":
        params = connections[DEFAULT_DB_ALIAS].get_connection_params()
        params.pop("cursor_factory")  # Django's sync cursor class: no cursor is used here
        return cls(await psycopg.AsyncConnection.connect(**params, autocommit=True))

    @property
    def usable(self) -> bool:
        return self.lost is None and not self.pg.closed

    def _on_readable(self) -> None:
        try:
            self.pgconn.consume_input()
        except psycopg.Error as error:  # the server closed the connection
            self.lost = self.lost or error
        if self.readable is not None and not self.readable.done():
            if self.lost is not None:
                self.readable.set_exception(self.lost)
            elif not self.pgconn.is_busy():
                self.readable.set_result(None)

    async def fetchone(self, sql: str, params: list) -> tuple | None:
        result = await self._run(sql, params)
        if result.ntuples == 0:
            return None
        self.transformer.set_pgresult(result)
        return self.transformer.load_row(0, tuple)

    async def execute(self, sql: str, params: list) -> int:
        command_tuples = (await self._run(sql, params)).command_tuples
        return -1 if command_tuples is None else command_tuples

    async def _run(self, sql: str, params: list) -> pq.abc.PGresult:
        """One statement's result; a statement that comes again is prepared (as psycopg does, by its SQL and
        its parameters' types), so that PostgreSQL plans it once per connection."""
        if self.lost is not None:
            raise self.lost
        query = PostgresQuery(self.transformer)
        query.convert(sql, params)
        key = (sql, query.types)
        name = self.prepared.get(key)
        if name is None and key in self.seen and len(self.prepared) < self.PREPARED_MAX:
            name = b"aisaas_%d" % len(self.prepared)
            self.pgconn.send_prepare(name, query.query, param_types=query.types)
            await self._result()
            self.prepared[key] = name
        if name is None:
            if len(self.prepared) < self.PREPARED_MAX:
                self.seen.add(key)
            self.pgconn.send_query_params(
                query.query, query.params, param_formats=query.formats, param_types=query.types
            )
        else:
            self.pgconn.send_query_prepared(name, query.params, param_formats=query.formats)
        return await self._result()

    async def _result(self) -> pq.abc.PGresult:
        """The result of what was just sent, once it is all sent and all back; raises its error."""
        while self.pgconn.flush():  # more than the socket took at once (a long answer): wait until it takes more
            writable = self.loop.create_future()
            self.loop.add_writer(self.socket, _done_once, writable)
            try:
                await writable
            finally:
                self.loop.remove_writer(self.socket)
        results = []
        while True:
            if self.pgconn.is_busy():
                self.readable = self.loop.create_future()
                try:
                    await self.readable
                finally:
                    self.readable = None
            result = self.pgconn.get_result()
            if result is None:
                break
            results.append(result)
        for result in results:
            if result.status not in _RESULT_OK:
                raise psycopg.errors.error_from_result(result, encoding=self.pg.info.encoding)
        return results[-1]

    def close(self) -> None:
        """Close it, from the loop or from outside it (the loop may be closed already)."""
        if not self.loop.is_closed():
            self.loop.remove_reader(self.socket)
        self.pgconn.finish()


def _done_once(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


_RESULT_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY)


class _LoopPool:
    """An event loop's connections: the idle ones, and a slot for each connection that may exist at once."""

    def __init__(self):
        self.idle: list[_LoopConnection] = []
        self.slots = asyncio.Semaphore(settings.DB_LOOP_CONNECTIONS)


_loop_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool]" = weakref.WeakKeyDictionary()


@functools.cache
def database_vendor() -> str:
    """The default database's vendor ("postgresql", "sqlite"), which its ENGINE fixes for the life of the
    process. Remembered because `connections[...]` is an asgiref Local lookup, ~5 µs from async code, and the
    gate and the settlement ask on every paid call."""
    return connections[DEFAULT_DB_ALIAS].vendor


def loop_queries_supported() -> bool:
    """Whether the database can be queried from the event loop (loop_fetchone, loop_execute): PostgreSQL."""
    return database_vendor() == "postgresql"


@contextlib.asynccontextmanager
async def _loop_connection(*, fresh: bool):
    """One of this event loop's own connections, given back for the next query when this one went well and
    closed when it did not. Yields it and whether it was used before."""
    loop = asyncio.get_running_loop()
    if loop not in _loop_pools:
        _loop_pools[loop] = _LoopPool()
    pool = _loop_pools[loop]
    async with pool.slots:  # a burst of requests waits here rather than opening connections without bound
        connection = None
        while pool.idle and connection is None and not fresh:
            candidate = pool.idle.pop()
            if candidate.usable:
                connection = candidate
            else:
                candidate.close()
        if fresh and pool.idle:  # keep within the slots: this one is replaced by a new connection
            pool.idle.pop().close()
        reused = connection is not None
        if connection is None:
            connection = await _LoopConnection.connect()
        try:
            yield connection, reused
        except BaseException:
            connection.close()
            raise
        pool.idle.append(connection)


async def _on_loop(run):
    """`run(connection)` on a loop connection. A reused connection the server has just closed (a restart, a
    failover, faster than its socket could tell) fails before running anything: then once more on a new one.
    A new connection that fails is an outage, raised."""
    reused = False
    try:
        async with _loop_connection(fresh=False) as (connection, reused):
            return await run(connection)  # on an error the connection is closed, not given back
    except psycopg.OperationalError:
        if not reused:
            raise
    async with _loop_connection(fresh=True) as (connection, _):
        return await run(connection)


async def loop_fetchone(sql: str, params: list) -> tuple | None:
    """The first row of a query run from the event loop (PostgreSQL; raises LoopDatabaseError)."""
    return await _on_loop(lambda connection: connection.fetchone(sql, params))


async def loop_execute(sql: str, params: list) -> int:
    """Run one statement from the event loop (its own transaction); returns the rows it changed."""
    return await _on_loop(lambda connection: connection.execute(sql, params))


def loop_connections_close() -> None:
    """Close every event loop's idle connections, for code that runs many loops in one process (the tests):
    a finished loop's connections would otherwise stay open until the garbage collector finds them."""
    for pool in list(_loop_pools.values()):
        while pool.idle:
            pool.idle.pop().close()

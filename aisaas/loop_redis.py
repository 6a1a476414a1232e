"""A small Redis client for the event loop, for the few scripts that run before and after every paid call
(usage.limits: the rate limits' take and give-back, with the prompt cache riding along).

redis-py's asyncio client costs about twice the CPU per script call (its connection pool, retry wrapper and
stream reader: bench/gate.py, docs/performance.md), and on the request path that CPU is the user's time. This
one keeps one connection per event loop and pipelines on it: each call writes its command at once and waits
for its own reply, the replies coming back in the order the commands went out. It speaks RESP2 and raises
redis-py's exceptions, so callers handle errors as they would with redis-py.

Any failure (a lost connection, a timeout, a reply that cannot be read) closes the connection and fails
every call waiting on it: a reply can then never be taken for another call's. The next call reconnects.
"""

import asyncio
import collections
import hashlib
import ssl
from dataclasses import dataclass, field

from redis.connection import parse_url
from redis.exceptions import ConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class LoopConnection(asyncio.Protocol):
    """One connection: commands out, replies matched first in, first out to the calls waiting for them. Every
    command goes through `send` (tests and bench/gate.py count them there)."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.buffer = bytearray()
        self.lost: Exception | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while self.waiting:
            try:
                parsed = _parse(self.buffer, 0)
            except ValueError as error:
                self.fail(ConnectionError(f"Unreadable reply from Redis: {error}"))
                return
            if parsed is None:  # the rest of the reply is still on its way
                return
            reply, end = parsed
            del self.buffer[:end]
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc):
        self.fail(ConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}"))

    def fail(self, error: Exception) -> None:
        """Close the connection and fail every call waiting on it."""
        self.lost = self.lost or error
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, *parts) -> asyncio.Future:
        if self.lost is not None:
            raise self.lost
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self.transport.write(_command(parts))
        return waiter


def _settle_from(future: asyncio.Future, done: asyncio.Future) -> None:
    """Give `future` the outcome of `done`."""
    if done.cancelled():
        future.cancel()
    elif done.exception() is not None:
        future.set_exception(done.exception())
    else:
        future.set_result(done.result())


def _command(parts) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, str):
            part = part.encode()
        elif isinstance(part, int | float):
            part = repr(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _parse(buffer: bytearray, start: int):
    """(reply, end) of the RESP2 reply at `start`, or None if it is not complete yet. An error reply is returned
    as a ResponseError (or NoScriptError) instance, raised by the caller."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, line, after = buffer[start], bytes(buffer[start + 1 : line_end]), line_end + 2
    if kind == ord(":"):
        return int(line), after
    if kind == ord("$"):
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            return None
        return bytes(buffer[after : after + length]), after + length + 2
    if kind == ord("*"):
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            parsed = _parse(buffer, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    if kind == ord("+"):
        return line, after
    if kind == ord("-"):
        message = line.decode(errors="replace")
        return (NoScriptError if message.startswith("NOSCRIPT") else ResponseError)(message), after
    raise ValueError(f"unknown reply type {chr(kind)!r}")


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1, by which the server knows it once loaded."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())  # noqa: S324 (Redis's)


def _tls_context(options: dict) -> ssl.SSLContext:
    """A rediss:// URL's TLS, with redis-py's query options for it (ssl_ca_certs, ssl_cert_reqs)."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):  # a managed Redis with a self-signed certificate
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _time_out(connection: LoopConnection) -> None:
    # The error is made only when it happens: a script's timer is set and cancelled on every paid call.
    connection.fail(RedisTimeoutError("Timed out waiting for Redis"))


class LoopRedis:
    """A Redis server, as REDIS_URL-style `url` names it, for the event loop this is created on."""

    def __init__(self, url: str, *, connect_timeout: float | None = None, timeout: float | None = None):
        self.options = parse_url(url)
        self.secure = url.startswith("rediss://")
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.connection: LoopConnection | None = None
        self.connecting = asyncio.Lock()

    async def _connected(self) -> LoopConnection:
        if self.connection is not None and self.connection.lost is None:
            return self.connection
        async with self.connecting:
            if self.connection is None or self.connection.lost is not None:
                self.connection = await self._connect()
        return self.connection

    async def _connect(self) -> LoopConnection:
        loop, options = asyncio.get_running_loop(), self.options
        try:
            async with asyncio.timeout(self.connect_timeout):
                if "path" in options:
                    _, connection = await loop.create_unix_connection(LoopConnection, options["path"])
                else:
                    _, connection = await loop.create_connection(
                        LoopConnection,
                        options.get("host", "localhost"),
                        options.get("port", 6379),
                        ssl=_tls_context(options) if self.secure else None,
                    )
                setup = []
                if options.get("password"):
                    setup.append(("AUTH", *filter(None, [options.get("username")]), options["password"]))
                if options.get("db"):
                    setup.append(("SELECT", options["db"]))
                for reply in await asyncio.gather(*(connection.send(*command) for command in setup)):
                    if isinstance(reply, Exception):
                        connection.fail(ConnectionError(f"Redis refused the connection's set-up: {reply}"))
                        raise connection.lost
        except OSError as error:  # TimeoutError included
            raise ConnectionError(f"Cannot connect to Redis: {error}") from None
        return connection

    async def execute(self, *parts):
        """One command's reply; raises redis.exceptions.ConnectionError, TimeoutError or ResponseError. A call
        cancelled while it waits leaves its place in the queue: its reply, when it comes, is dropped."""
        connection = await self._connected()
        waiter = connection.send(*parts)
        try:
            async with asyncio.timeout(self.timeout):
                reply = await waiter
        except TimeoutError:
            _time_out(connection)
            raise connection.lost from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def run_script(self, script: Script, keys: list, args: list):
        """EVALSHA of `script`, loaded with EVAL when the server does not have it yet (or lost it)."""
        await self._connected()
        return await self.script_soon(script, keys, args)

    def script_soon(self, script: Script, keys: list, args: list) -> asyncio.Future:
        """run_script's reply as a future, the script sent in the event loop's next turn rather than now.

        For the request path: a caller that sends a statement to PostgreSQL right after this call (from a task
        it has just started, or inline) has that longer round trip start first, and waits for this reply
        without a task of its own, which costs more CPU than the script's send. The future fails as run_script
        raises, timeout included. Cancelling it only drops the reply."""
        connection = self.connection
        if connection is None or connection.lost is not None:  # connecting needs awaiting: a task, this once
            return asyncio.ensure_future(self.run_script(script, keys, args))
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        loop.call_soon(self._script_send, connection, reply, script, keys, args)
        return reply

    def _script_send(self, connection: LoopConnection, reply: asyncio.Future, script: Script, keys, args) -> None:
        if reply.done():  # cancelled before its turn
            return
        try:
            sent = connection.send("EVALSHA", script.sha, len(keys), *keys, *args)
        except Exception as error:  # the connection was lost meanwhile
            reply.set_exception(error)
            return
        timer = None
        if self.timeout is not None:
            timer = asyncio.get_running_loop().call_later(self.timeout, _time_out, connection)
        sent.add_done_callback(lambda sent: self._script_replied(sent, reply, timer, script, keys, args))

    def _script_replied(self, sent: asyncio.Future, reply: asyncio.Future, timer, script: Script, keys, args):
        if timer is not None:
            timer.cancel()
        if reply.done():
            return
        if sent.cancelled():
            reply.cancel()
            return
        outcome = sent.exception() or sent.result()
        if isinstance(outcome, NoScriptError):  # load it: one more round trip, this once per server
            loaded = asyncio.ensure_future(self.execute("EVAL", script.source, len(keys), *keys, *args))
            loaded.add_done_callback(lambda loaded: reply.done() or _settle_from(reply, loaded))
        elif isinstance(outcome, Exception):
            reply.set_exception(outcome)
        else:
            reply.set_result(outcome)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.fail(ConnectionError("Closed"))

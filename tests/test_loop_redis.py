"""aisaas.loop_redis, the event loop's Redis client for the limits' scripts: replies matched to their calls
however they arrive, failures that lose no reply to the wrong call, and each way a REDIS_URL can name a
server. Against the real Redis (CI sets REDIS_URL), except the reply parser's own tests."""

import asyncio
import contextlib
import subprocess
import uuid

import pytest
import redis
from django.conf import settings
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aisaas.loop_redis import LoopConnection, LoopRedis, Script

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs a real Redis: set REDIS_URL (.ci/run does)")
ECHO_ARGV = Script("return ARGV[1]")


class _Waiting:
    """A LoopConnection without a socket: what it hands to the calls waiting on it."""

    def __init__(self, calls: int):
        self.connection = LoopConnection()
        self.waiters = [asyncio.get_running_loop().create_future() for _ in range(calls)]
        self.connection.waiting.extend(self.waiters)

    def results(self) -> list:
        return [waiter.result() if waiter.done() else "pending" for waiter in self.waiters]


async def test_replies_split_anywhere_reach_their_calls_in_order():
    take = b"*6\r\n:1\r\n:0\r\n:42\r\n:0\r\n:1795831324435\r\n$5\r\nhello\r\n"  # a take script's reply
    replies = take + b"$-1\r\n" + b"*2\r\n*1\r\n:7\r\n$0\r\n\r\n"
    waiting = _Waiting(3)
    for byte in replies:  # one byte at a time: every reply arrives split at every possible place
        waiting.connection.data_received(bytes([byte]))
    assert waiting.results() == [[1, 0, 42, 0, 1795831324435, b"hello"], None, [[7], b""]]
    assert not waiting.connection.buffer


async def test_an_error_reply_is_handed_to_its_call_and_the_next_reply_to_the_next():
    waiting = _Waiting(3)
    waiting.connection.data_received(b"-NOSCRIPT No matching script.\r\n-ERR wrong\r\n+OK\r\n")
    noscript, error, ok = waiting.results()
    assert type(noscript).__name__ == "NoScriptError" and isinstance(error, ResponseError) and ok == b"OK"


async def test_an_unreadable_reply_fails_every_waiting_call_rather_than_guess():
    waiting = _Waiting(2)
    waiting.connection.data_received(b"?what\r\n:1\r\n")
    assert all(isinstance(waiter.exception(), ConnectionError) for waiter in waiting.waiters)
    assert waiting.connection.lost is not None


@pytest.fixture
async def client():
    redis_client = LoopRedis(settings.REDIS_URL, connect_timeout=1, timeout=2)
    yield redis_client
    redis_client.close()


@needs_redis
async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(client):
    connection = await client.execute("CLIENT", "ID")
    replies = await asyncio.gather(*(client.run_script(ECHO_ARGV, [], [f"call-{n}"]) for n in range(200)))
    assert replies == [f"call-{n}".encode() for n in range(200)]
    assert await client.execute("CLIENT", "ID") == connection


@needs_redis
async def test_a_script_the_server_does_not_know_is_loaded_and_then_run_by_its_sha(client):
    script = Script(f"return '{uuid.uuid4().hex}'")
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [0]
    first = await client.run_script(script, [], [])
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
    assert await client.run_script(script, [], []) == first


@needs_redis
async def test_an_error_reply_raises_and_the_connection_keeps_working(client):
    with pytest.raises(ResponseError):
        await client.execute("INCR", "loop-redis:not-a-number", "extra-argument")
    assert await client.execute("PING") == b"PONG"


@needs_redis
async def test_the_url_selects_the_database(client):
    key = f"loop-redis:{uuid.uuid4().hex}"
    await client.execute("SET", key, "here", "PX", 10_000)
    assert redis.Redis.from_url(settings.REDIS_URL).get(key) == b"here"


@needs_redis
async def test_a_connection_the_server_drops_fails_its_call_and_the_next_call_reconnects(client):
    own_id = await client.execute("CLIENT", "ID")
    blocked = asyncio.ensure_future(client.execute("BLPOP", f"loop-redis:{uuid.uuid4().hex}", 5))
    await asyncio.sleep(0.1)
    redis.Redis.from_url(settings.REDIS_URL).client_kill_filter(_id=own_id)
    with pytest.raises(ConnectionError):
        await blocked
    assert await client.execute("PING") == b"PONG"
    assert await client.execute("CLIENT", "ID") != own_id


@needs_redis
async def test_a_call_that_times_out_raises_and_leaves_no_reply_behind_for_the_next(client):
    client.timeout = 0.2
    with pytest.raises(RedisTimeoutError):
        await client.execute("BLPOP", f"loop-redis:{uuid.uuid4().hex}", 1)  # answers nil after 1 s
    client.timeout = 2
    assert await client.execute("ECHO", "after") == b"after"


@needs_redis
async def test_a_cancelled_call_does_not_shift_the_replies_of_the_calls_after_it(client):
    empty = f"loop-redis:{uuid.uuid4().hex}"
    cancelled = asyncio.ensure_future(client.execute("BLPOP", empty, 0.3))  # its nil comes first, in 0.3 s
    await asyncio.sleep(0.05)
    cancelled.cancel()
    assert await client.execute("ECHO", "mine") == b"mine"


@needs_redis
async def test_a_script_soon_goes_out_after_what_the_caller_sends_in_this_turn_and_gives_its_reply(client):
    await client.execute("PING")  # connected: script_soon then sends without a task
    key = f"loop-redis:{uuid.uuid4().hex}"
    sent = []
    send = client.connection.send
    client.connection.send = lambda *parts: sent.append(parts[0]) or send(*parts)
    set_first = asyncio.ensure_future(client.execute("SET", key, 41))  # a task: it runs in the loop's next turn
    reply = client.script_soon(Script("return redis.call('INCR', KEYS[1])"), [key], [])
    assert sent == []  # nothing is sent now, so the task's command goes first
    assert await reply == 42 and await set_first == b"OK"
    assert sent[0] == "SET" and sent[1] in ("EVALSHA", "EVAL")


@needs_redis
async def test_a_script_soon_the_server_does_not_know_is_loaded_and_its_errors_fail_its_future(client):
    await client.execute("PING")
    script = Script(f"return '{uuid.uuid4().hex}'")
    assert await client.script_soon(script, [], []) == await client.run_script(script, [], [])
    with pytest.raises(ResponseError):
        await client.script_soon(Script("return redis.call('INCR', KEYS[1], 'extra')"), ["loop-redis:x"], [])
    assert await client.execute("PING") == b"PONG"


@needs_redis
async def test_a_script_soon_that_times_out_fails_and_the_next_call_reconnects(client):
    await client.execute("PING")
    client.timeout = 0.2
    slow = Script("redis.call('BLPOP', KEYS[1], 0) return 1")  # scripts may not block: Redis answers at once
    with pytest.raises(ResponseError):
        await client.script_soon(slow, [f"loop-redis:{uuid.uuid4().hex}"], [])
    client.timeout = 2
    busy = asyncio.ensure_future(client.execute("BLPOP", f"loop-redis:{uuid.uuid4().hex}", 1))  # nil in 1 s
    client.timeout = 0.2
    with pytest.raises(RedisTimeoutError):  # queued behind the BLPOP: no reply within its timeout
        await client.script_soon(ECHO_ARGV, [], ["late"])
    with pytest.raises(RedisTimeoutError):
        await busy  # the connection was closed under it too
    client.timeout = 2
    assert await client.script_soon(ECHO_ARGV, [], ["after"]) == b"after"


@needs_redis
async def test_a_script_soon_cancelled_before_its_turn_is_never_sent(client):
    key = f"loop-redis:{uuid.uuid4().hex}"
    await client.execute("PING")
    client.script_soon(Script("return redis.call('SET', KEYS[1], 'sent')"), [key], []).cancel()
    assert await client.execute("EXISTS", key) == 0


async def test_an_unreachable_server_is_a_connection_error():
    with pytest.raises(ConnectionError):
        await LoopRedis("redis://127.0.0.1:9/0", connect_timeout=1).execute("PING")


@needs_redis
async def test_a_password_in_the_url_authenticates():
    admin = redis.Redis.from_url(settings.REDIS_URL)
    user = f"loop-redis-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(user, enabled=True, passwords=["+s3cret-pass"], keys=["*"], commands=["+@all"])
    try:
        location = settings.REDIS_URL.replace("redis://", f"redis://{user}:s3cret-pass@", 1)
        authenticated = LoopRedis(location, connect_timeout=1)
        assert await authenticated.execute("ACL", "WHOAMI") == user.encode()
        authenticated.close()
        with pytest.raises(ConnectionError):
            await LoopRedis(location.replace("s3cret-pass", "wrong-pass"), connect_timeout=1).execute("PING")
    finally:
        admin.acl_deluser(user)


@contextlib.asynccontextmanager
async def _redis_proxy(**serve):
    """A server forwarding each connection to the real Redis: TLS (`ssl=`) or a Unix socket (`path=`)."""
    target = redis.connection.parse_url(settings.REDIS_URL)

    async def forward(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection(target["host"], target["port"])

        async def pipe(reader, writer):
            with contextlib.suppress(OSError):  # either side closed
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    if "path" in serve:
        server = await asyncio.start_unix_server(forward, **serve)
    else:
        server = await asyncio.start_server(forward, "127.0.0.1", 0, **serve)
    async with server:
        yield server


@needs_redis
async def test_a_rediss_url_speaks_tls(tmp_path):
    import ssl

    key, certificate = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", key, "-out", certificate],
        check=True,
        capture_output=True,
    )  # fmt: skip
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate, key)
    db = redis.connection.parse_url(settings.REDIS_URL).get("db", 0)
    async with _redis_proxy(ssl=tls) as proxy:
        port = proxy.sockets[0].getsockname()[1]
        verified = LoopRedis(f"rediss://localhost:{port}/{db}?ssl_ca_certs={certificate}", connect_timeout=2)
        assert await verified.execute("PING") == b"PONG"
        verified.close()
        self_signed = LoopRedis(f"rediss://127.0.0.1:{port}/{db}?ssl_cert_reqs=none", connect_timeout=2)
        assert await self_signed.execute("PING") == b"PONG"
        self_signed.close()
        with pytest.raises(ConnectionError):  # an unknown certificate is refused by default
            await LoopRedis(f"rediss://localhost:{port}/{db}", connect_timeout=2).execute("PING")


@needs_redis
async def test_a_unix_socket_url_connects_through_the_socket(tmp_path):
    db = redis.connection.parse_url(settings.REDIS_URL).get("db", 0)
    async with _redis_proxy(path=str(tmp_path / "redis.sock")):
        through_socket = LoopRedis(f"unix://{tmp_path / 'redis.sock'}?db={db}", connect_timeout=2)
        assert await through_socket.execute("PING") == b"PONG"
        through_socket.close()

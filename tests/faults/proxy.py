"""A TCP proxy in front of a server, which a test cuts as an outage or a restart would."""

import asyncio
import contextlib
import threading

from tests.servers import free_port


class FaultProxy:
    """Listens on 127.0.0.1:`port` and relays each connection to `upstream`: (host, port), or a Unix socket path.

    cut():   close every relayed connection and refuse new ones, as a server that went down;
    drop():  close every relayed connection but keep accepting, as a server restarted at once;
    restore(): accept again after a cut.
    """

    def __init__(self, upstream: tuple[str, int] | str):
        self.upstream = upstream
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._listen())

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    async def _listen(self):
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def _open_upstream(self):
        if isinstance(self.upstream, str):
            return await asyncio.open_unix_connection(self.upstream)
        return await asyncio.open_connection(*self.upstream)

    async def _relay(self, client_reader, client_writer):
        try:
            server_reader, server_writer = await self._open_upstream()
        except OSError:
            client_writer.close()
            return
        self.writers |= {client_writer, server_writer}

        async def pipe(reader, writer):
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
        self.writers -= {client_writer, server_writer}

    async def _drop(self):
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _cut(self):
        self.server.close()
        await self._drop()
        await self.server.wait_closed()

    def cut(self) -> None:
        self._call(self._cut())

    def drop(self) -> None:
        self._call(self._drop())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def postgres_upstream(settings_dict: dict) -> tuple[str, int] | str:
    """Where the test database listens: a TCP address, or the embedded server's Unix socket."""
    port = int(settings_dict.get("PORT") or 5432)
    folder = settings_dict.get("OPTIONS", {}).get("host") or settings_dict.get("HOST") or ""
    if folder.startswith("/"):
        return f"{folder}/.s.PGSQL.{port}"
    return (folder or "127.0.0.1", port)

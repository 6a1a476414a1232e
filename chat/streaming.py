"""Relaying a stream of text deltas to a slow consumer (a websocket) with coalescing and a stop signal."""

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable

_END = object()


async def relay_text(
    source: AsyncIterable[str],
    *,
    deliver: Callable[[str], Awaitable[None]],
    stop: asyncio.Event,
    window_seconds: float,
) -> bool:
    """Pass text from `source` to `deliver` until the source ends or `stop` is set. Returns True if stopped.

    The first delta goes out at once (time to first token is what users feel); after that, deltas arriving
    within `window_seconds` of the last delivery are joined into one call, which keeps websocket frames and
    browser re-renders to a few dozen a second however fast the provider streams. Text already received is
    always delivered, also when the source fails or stop is set; a source error is raised after that.
    """
    loop = asyncio.get_running_loop()
    iterator = aiter(source)
    pending: list[str] = []
    last_delivery = -window_seconds
    flush_at: float | None = None
    next_piece = asyncio.ensure_future(anext(iterator, _END))
    stop_requested = asyncio.ensure_future(stop.wait())

    async def flush():
        nonlocal last_delivery, flush_at
        if pending:
            text = "".join(pending)
            pending.clear()
            await deliver(text)
        last_delivery, flush_at = loop.time(), None

    try:
        while True:
            timeout = None if flush_at is None else max(0.0, flush_at - loop.time())
            done, _ = await asyncio.wait(
                {next_piece, stop_requested}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if stop_requested in done:
                await flush()
                return True
            if next_piece not in done:  # the coalescing window closed
                await flush()
                continue
            try:
                piece = next_piece.result()
            except BaseException:
                await flush()
                raise
            if piece is _END:
                await flush()
                return False
            pending.append(piece)
            next_piece = asyncio.ensure_future(anext(iterator, _END))
            if loop.time() - last_delivery >= window_seconds:
                await flush()
            elif flush_at is None:
                flush_at = last_delivery + window_seconds
    finally:
        for waiter in (next_piece, stop_requested):
            if not waiter.done():
                waiter.cancel()
        await asyncio.gather(next_piece, stop_requested, return_exceptions=True)

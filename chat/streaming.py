"""Relaying a stream of text deltas to a slow consumer (a websocket) with coalescing and a stop signal."""

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable


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

    One reader task drains the source into a list and one watcher waits for `stop`; both only wake the relay,
    which then delivers what has gathered. A piece costs an append, not a task and a wait of its own (that
    was most of the relay's CPU at 50 streams; docs/performance.md).
    """
    loop = asyncio.get_running_loop()
    pending: list[str] = []
    wake = asyncio.Event()  # a piece arrived, a stop, or the end
    interrupt = asyncio.Event()  # a stop or the end: cuts a coalescing wait short
    ended = False
    failure: BaseException | None = None

    async def read() -> None:
        nonlocal ended, failure
        try:
            async for piece in source:
                pending.append(piece)
                wake.set()
        except Exception as error:  # raised to the caller once the text before it is delivered
            failure = error
        finally:
            ended = True
            wake.set()
            interrupt.set()

    async def watch_stop() -> None:
        await stop.wait()
        wake.set()
        interrupt.set()

    async def flush() -> None:
        if pending:
            text = "".join(pending)
            pending.clear()
            await deliver(text)

    reader, watcher = asyncio.ensure_future(read()), asyncio.ensure_future(watch_stop())
    next_delivery = loop.time()  # the first piece goes out as soon as it arrives
    try:
        while True:
            await wake.wait()
            wake.clear()
            if stop.is_set():
                await flush()
                return True
            if pending and not ended and (hold := next_delivery - loop.time()) > 0:
                # Within the window: let more pieces gather (they do not wake this wait); a stop or the end
                # cuts it short.
                try:
                    await asyncio.wait_for(interrupt.wait(), hold)
                except TimeoutError:
                    pass
                wake.set()  # look again at once: the window closed, or a stop or the end
                continue
            if pending:
                await flush()
                next_delivery = loop.time() + window_seconds
            if ended:
                if failure is not None:
                    raise failure
                return False
    finally:
        for task in (reader, watcher):
            task.cancel()
        await asyncio.gather(reader, watcher, return_exceptions=True)

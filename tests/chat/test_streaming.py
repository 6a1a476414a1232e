"""relay_text: coalescing, stop and failure handling, with timed in-process sources."""

import asyncio

import pytest

from chat.streaming import relay_text


async def timed(pieces, gap: float, fail_after: int | None = None):
    for position, piece in enumerate(pieces):
        if position:
            await asyncio.sleep(gap)
        if position == fail_after:
            raise RuntimeError("source failed")
        yield piece


async def run(source, *, stop=None, window=0.05):
    delivered = []

    async def deliver(text):
        delivered.append(text)

    stopped = await relay_text(source, deliver=deliver, stop=stop or asyncio.Event(), window_seconds=window)
    return delivered, stopped


async def test_first_piece_is_immediate_and_fast_pieces_are_joined():
    pieces = [f"t{i} " for i in range(20)]
    delivered, stopped = await run(timed(pieces, gap=0.005), window=0.05)
    assert not stopped
    assert "".join(delivered) == "".join(pieces)
    assert delivered[0] == "t0 "  # not held back
    assert len(delivered) < 8  # ~100 ms of tokens in 50 ms windows


async def test_slow_pieces_each_go_out_alone():
    pieces = ["a", "b", "c"]
    delivered, _ = await run(timed(pieces, gap=0.03), window=0.01)
    assert delivered == pieces


async def test_buffered_text_is_flushed_when_the_window_closes_even_if_the_source_pauses():
    async def bursty():
        yield "a"
        await asyncio.sleep(0.01)
        yield "b"  # arrives within the window after "a" went out: held until the window closes
        await asyncio.sleep(0.3)
        yield "c"

    times = []
    loop = asyncio.get_running_loop()

    async def deliver(text):
        times.append((text, loop.time()))

    start = loop.time()
    await relay_text(bursty(), deliver=deliver, stop=asyncio.Event(), window_seconds=0.05)
    assert [text for text, _ in times] == ["a", "b", "c"]
    assert times[1][1] - start < 0.2  # "b" did not wait for "c"
    assert times[1][1] - times[0][1] >= 0.04  # nor went out before the window closed


async def test_stop_ends_the_relay_and_keeps_what_was_received():
    stop = asyncio.Event()
    pieces = [f"{i}," for i in range(1000)]
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, stop.set)
    delivered, stopped = await run(timed(pieces, gap=0.002), stop=stop, window=0.01)
    assert stopped
    text = "".join(delivered)
    assert text and pieces[0] + pieces[1] == text[: len(pieces[0] + pieces[1])]
    assert len(text) < len("".join(pieces))


async def test_stop_works_while_the_source_is_silent():
    async def silent():
        await asyncio.sleep(60)
        yield "never"

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.02, stop.set)
    delivered, stopped = await asyncio.wait_for(run(silent(), stop=stop), timeout=2)
    assert (delivered, stopped) == ([], True)


async def test_text_before_a_failure_is_delivered_then_the_error_raised():
    delivered = []

    async def deliver(text):
        delivered.append(text)

    with pytest.raises(RuntimeError, match="source failed"):
        await relay_text(
            timed(["a", "b", "c", "d"], gap=0.001, fail_after=3),
            deliver=deliver,
            stop=asyncio.Event(),
            window_seconds=1,
        )
    assert "".join(delivered) == "abc"


async def test_pieces_that_arrive_together_go_out_together():
    async def burst():
        for piece in ("a", "b", "c"):
            yield piece  # no pause: all three are there when the relay first looks

    delivered, stopped = await run(burst(), window=0.05)
    assert (delivered, stopped) == (["abc"], False)

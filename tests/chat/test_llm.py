"""The LLM layer against real dev LLM servers: fallback before the first token, never after."""

import asyncio
import json
from decimal import Decimal

import openai
import pytest

from llm.provider import (
    CompletionStream,
    ModelConfigError,
    ProviderError,
    model_catalogue,
    moderation_categories,
    parse_model_spec,
)
from tests.servers import free_port, start_devllm


@pytest.fixture(scope="module")
def broken_devllm():
    server = start_devllm("--fault", "error_before", "--ttft-ms", "0")
    yield server
    server.stop()


def stream(content: str = "hi") -> CompletionStream:
    return CompletionStream(
        messages=[{"role": "user", "content": content}], model="demo-mini", max_tokens=100, temperature=Decimal("0.7")
    )


async def collect(completion: CompletionStream) -> str:
    return "".join([text async for text in completion])


async def test_primary_answers_with_usage():
    completion = stream()
    text = await collect(completion)
    assert text.startswith("You said: hi")
    assert completion.usage["completion_tokens"] == 12
    assert (completion.provider, completion.model, completion.finish_reason) == ("primary", "demo-mini", "stop")


async def test_fallback_is_used_when_the_primary_fails_before_the_first_token(settings, broken_devllm, devllm):
    settings.LLM_BASE_URL = f"{broken_devllm.url}/v1"
    settings.LLM_FALLBACK_BASE_URL = f"{devllm.url}/v1"
    settings.LLM_FALLBACK_MODEL = "demo-large:2.50:10.00"
    completion = stream()
    text = await collect(completion)
    assert text.startswith("You said: hi")
    assert (completion.provider, completion.model) == ("fallback", "demo-large")


async def test_fallback_is_used_when_the_primary_is_unreachable(settings, devllm):
    settings.LLM_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.LLM_FALLBACK_BASE_URL = f"{devllm.url}/v1"
    settings.LLM_FALLBACK_MODEL = "demo-large:2.50:10.00"
    completion = stream()
    assert (await collect(completion)).startswith("You said")
    assert completion.provider == "fallback"


async def test_fallback_is_never_used_after_tokens_reached_the_user(settings, devllm):
    settings.LLM_FALLBACK_BASE_URL = f"{devllm.url}/v1"
    settings.LLM_FALLBACK_MODEL = "demo-large:2.50:10.00"
    completion = stream("go [devllm fault=error_mid fault_after=3]")
    received = []
    with pytest.raises(ProviderError) as raised:
        async for text in completion:
            received.append(text)
    assert len(received) == 3
    assert raised.value.code == "provider_error"
    assert completion.provider == "primary"


async def test_without_fallback_a_failure_before_the_first_token_is_reported(settings, broken_devllm):
    settings.LLM_BASE_URL = f"{broken_devllm.url}/v1"
    with pytest.raises(ProviderError):
        await collect(stream())


async def test_a_hanging_provider_times_out(settings):
    settings.LLM_TIMEOUT_SECONDS = 0.5
    with pytest.raises(ProviderError) as raised:
        await collect(stream("wait [devllm fault=hang]"))
    assert raised.value.code == "provider_timeout"


async def test_provider_error_text_never_reaches_the_user(settings, broken_devllm):
    settings.LLM_BASE_URL = f"{broken_devllm.url}/v1"
    with pytest.raises(ProviderError) as raised:
        await collect(stream())
    assert "fault" not in str(raised.value) and "devllm" not in str(raised.value)


async def test_a_provider_that_stalls_mid_stream_times_out(settings):
    settings.LLM_TIMEOUT_SECONDS = 0.5
    completion = stream("go [devllm fault=hang_mid fault_after=2 interval_ms=0]")
    received = []
    with pytest.raises(ProviderError) as raised:
        async for text in completion:
            received.append(text)
    assert len(received) == 2 and raised.value.code == "provider_timeout"


async def test_a_connection_cut_mid_stream_is_a_provider_error_after_the_text_received(settings):
    """The provider's process dies mid-answer: the socket closes inside a chunked body."""

    async def dying_provider(reader, writer):
        while (await reader.readline()) not in (b"\r\n", b""):  # the request line and headers
            pass
        await reader.read(65536)  # the JSON body, already sent
        chunk = json.dumps({"choices": [{"index": 0, "delta": {"content": "Half"}, "finish_reason": None}]})
        event = f"data: {chunk}\n\n".encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        writer.write(b"ff\r\ndata: {")  # a chunk that never ends
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(dying_provider, "127.0.0.1", 0)
    settings.LLM_BASE_URL = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    completion = stream()
    received = []
    try:
        with pytest.raises(ProviderError) as raised:
            async for text in completion:
                received.append(text)
    finally:
        server.close()
    assert received == ["Half"] and raised.value.code == "provider_error"
    assert completion.received_text == "Half" and completion.usage is None


def test_model_specs_are_parsed_with_decimal_prices(settings):
    assert parse_model_spec("gpt-4o-mini:0.15:0.60").output_usd_per_1m == Decimal("0.60")
    settings.LLM_DEFAULT_MODEL = "demo-large"
    assert model_catalogue().default.id == "demo-large"


@pytest.mark.parametrize("spec", ["no-prices", "m:abc:1", "m:1:-2", ":1:2"])
def test_bad_model_specs_are_refused(spec):
    with pytest.raises(ModelConfigError):
        parse_model_spec(spec)


async def test_the_event_stream_is_read_across_any_split_of_its_bytes():
    """Chunks cut anywhere (inside a line, inside a UTF-8 character), CRLF or LF line ends, comments, and a
    last line without its newline: the same events, stopping at [DONE]."""
    from llm.provider import _sse_chunks

    events = [{"choices": [{"delta": {"content": text}}]} for text in ("Grüße ", "🙂", "done")]
    body = (
        b": a comment\r\n\r\n"
        + b"".join(f"data: {json.dumps(event, ensure_ascii=False)}\r\n\r\n".encode() for event in events[:2])
        + f"data:{json.dumps(events[2])}\n\ndata: [DONE]".encode()
        + b"\n\ndata: {not json, never read}\n\n"
    )

    class Response:
        request = None

        def __init__(self, size):
            self.size = size

        async def aiter_bytes(self):
            for start in range(0, len(body), self.size):
                yield body[start : start + self.size]

    for size in (1, 3, 7, len(body)):
        assert [chunk async for chunk in _sse_chunks(Response(size))] == events


async def test_an_unreachable_provider_is_reported_as_unavailable_not_as_a_timeout(settings):
    settings.LLM_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: the connection is refused

    with pytest.raises(ProviderError) as raised:
        await collect(stream())

    assert raised.value.code == "provider_unavailable"


async def test_moderation_uses_the_fallback_when_the_primary_cannot_be_reached(settings, devllm):
    settings.LLM_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.LLM_FALLBACK_BASE_URL = f"{devllm.url}/v1"
    settings.LLM_FALLBACK_MODEL = "demo-large:2.50:10.00"

    assert await moderation_categories("a harmless question") is None
    assert await moderation_categories("flag-me:violence") == ["violence"]


async def test_moderation_without_a_reachable_provider_fails(settings):
    settings.LLM_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.LLM_FALLBACK_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.LLM_FALLBACK_MODEL = "demo-large:2.50:10.00"

    with pytest.raises(openai.APIConnectionError):
        await moderation_categories("a harmless question")


async def test_no_request_goes_out_on_a_connection_the_provider_has_idled_out(settings):
    """A provider (or its load balancer) that drops connections idle for 0.5 s, and does so when the next request
    arrives on one, without answering: with our idle connections dropped sooner (LLM_KEEPALIVE_SECONDS), every
    request after a pause goes out on a fresh connection and is answered."""
    moderation = json.dumps({"results": [{"flagged": False, "categories": {}}]}).encode()

    async def idling_provider(reader, writer):
        last = asyncio.get_running_loop().time()
        while request_line := await reader.readline():
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            await reader.readexactly(int(headers.get("content-length", 0)))
            if asyncio.get_running_loop().time() - last > 0.5:  # idle too long: dropped, no answer
                writer.transport.abort()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(moderation), moderation))  # fmt: skip
            await writer.drain()
            last = asyncio.get_running_loop().time()
        assert request_line is not None

    server = await asyncio.start_server(idling_provider, "127.0.0.1", 0)
    settings.LLM_BASE_URL = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    settings.LLM_KEEPALIVE_SECONDS = 0.3
    try:
        for _ in range(3):
            assert await moderation_categories("hello") is None
            await asyncio.sleep(0.7)
    finally:
        server.close()

"""The LLM layer: the configured models and their prices, and streaming completions through the async `openai`
SDK from any OpenAI-compatible provider, with an optional fallback provider.

The fallback is tried only when the primary fails *before its first token*: once text has reached the user,
switching models would splice two different answers together, so a later failure is reported instead.
"""

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache

import httpx2
import openai
from django.conf import settings

logger = logging.getLogger(__name__)


class ModelConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    id: str
    input_usd_per_1m: Decimal
    output_usd_per_1m: Decimal


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key: str


@dataclass(frozen=True)
class ModelCatalogue:
    models: tuple[ModelInfo, ...]
    default: ModelInfo
    fallback: ModelInfo | None

    def get(self, model_id: str) -> ModelInfo | None:
        return next((model for model in self.models if model.id == model_id), None)


def parse_model_spec(spec: str) -> ModelInfo:
    """'gpt-4o-mini:0.15:0.60' -> the model and its USD prices per million input/output tokens."""
    parts = spec.strip().rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise ModelConfigError(f"Model spec {spec!r} is not 'id:input_price:output_price'.")
    try:
        prices = [Decimal(part) for part in parts[1:]]
    except InvalidOperation:
        raise ModelConfigError(f"Model spec {spec!r} has a price that is not a number.") from None
    if any(price < 0 for price in prices):
        raise ModelConfigError(f"Model spec {spec!r} has a negative price.")
    return ModelInfo(parts[0], *prices)


@cache
def _catalogue(model_specs: tuple[str, ...], default_id: str, fallback_spec: str) -> ModelCatalogue:
    models = tuple(parse_model_spec(spec) for spec in model_specs if spec.strip())
    if not models:
        raise ModelConfigError("LLM_MODELS lists no model.")
    default = next((m for m in models if m.id == default_id), None) if default_id else models[0]
    if default is None:
        raise ModelConfigError(f"LLM_DEFAULT_MODEL {default_id!r} is not in LLM_MODELS.")
    fallback = parse_model_spec(fallback_spec) if fallback_spec else None
    return ModelCatalogue(models=models, default=default, fallback=fallback)


def model_catalogue() -> ModelCatalogue:
    return _catalogue(tuple(settings.LLM_MODELS), settings.LLM_DEFAULT_MODEL, settings.LLM_FALLBACK_MODEL)


def primary_provider() -> Provider:
    return Provider("primary", settings.LLM_BASE_URL, settings.LLM_API_KEY)


def fallback_provider() -> Provider | None:
    if not (settings.LLM_FALLBACK_BASE_URL and settings.LLM_FALLBACK_MODEL):
        return None
    return Provider("fallback", settings.LLM_FALLBACK_BASE_URL, settings.LLM_FALLBACK_API_KEY or settings.LLM_API_KEY)


# One client (one connection pool) per provider per event loop: connection pools are bound to the loop they
# were first used on, and tests run many loops in one process. The SDK sends through aiohttp (its `aiohttp`
# extra), whose C HTTP parser reads a stream's chunks for a fraction of httpx's CPU: at 50 streams that
# cut the added time to first token by two thirds (docs/performance.md).
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()


def client_for(provider: Provider) -> openai.AsyncOpenAI:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (
        provider.base_url,
        provider.api_key,
        settings.LLM_TIMEOUT_SECONDS,
        settings.LLM_MAX_RETRIES,
        settings.LLM_KEEPALIVE_SECONDS,
    )
    if key not in per_loop:
        # An idle connection is dropped before the provider drops it (LLM_KEEPALIVE_SECONDS): a request sent on a
        # connection the provider is closing at that moment fails without ever reaching it.
        limits = httpx2.Limits(
            max_connections=openai.DEFAULT_CONNECTION_LIMITS.max_connections,
            max_keepalive_connections=openai.DEFAULT_CONNECTION_LIMITS.max_keepalive_connections,
            keepalive_expiry=settings.LLM_KEEPALIVE_SECONDS,
        )
        per_loop[key] = openai.AsyncOpenAI(
            base_url=provider.base_url,
            api_key=provider.api_key,
            timeout=settings.LLM_TIMEOUT_SECONDS,
            max_retries=settings.LLM_MAX_RETRIES,
            http_client=openai.DefaultAioHttpClient(limits=limits),
        )
    return per_loop[key]


async def clients_close() -> None:
    """Close the provider clients of the running event loop, for code that ends a loop it made (bench/gate.py)."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.close()


class ProviderError(Exception):
    """The provider failed. `code` is safe to show a user; the provider's own message is only logged."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def _provider_error(error: Exception) -> ProviderError:
    if _connection_failed(error):
        return ProviderError("provider_unavailable", "The model cannot be reached right now.")
    if isinstance(error, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderError("provider_timeout", "The model took too long to answer.")
    if isinstance(error, openai.RateLimitError):
        return ProviderError("provider_busy", "The model is busy right now.")
    return ProviderError("provider_error", "The model failed to answer.")


def _connection_failed(error: BaseException) -> bool:
    """Whether the provider could not be connected to (refused, reset, unreachable). The SDK's aiohttp transport
    reports a refused connection as a connect timeout, so the causes are what tell."""
    while error is not None:
        if isinstance(error, ConnectionError | httpx2.ConnectError):
            return True
        error = error.__cause__ or error.__context__
    return False


_END = object()


class CompletionStream:
    """One streamed completion. `start()` sends the request at once, so the provider's time to first token
    overlaps whatever the caller does next; iterating yields the text deltas as they arrive.

    Afterwards `model` (the one that answered), `usage` (None if the stream was cut short), `received_text`
    (everything the provider sent, delivered or not) and `finish_reason` say what happened.
    """

    def __init__(
        self, *, messages: list[dict], model: str, max_tokens: int, temperature: Decimal, sampling: dict | None = None
    ):
        self.messages = messages
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.sampling = sampling or {}  # other sampling parameters (stop, top_p, seed, ...), sent as they are
        self.provider = ""
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.received_text = ""
        self._queue: asyncio.Queue = asyncio.Queue()
        self._producer: asyncio.Task | None = None

    def start(self) -> "CompletionStream":
        if self._producer is None:
            self._producer = asyncio.create_task(self._produce())
        return self

    async def __aiter__(self) -> AsyncIterator[str]:
        self.start()
        while (item := await self._queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item

    async def aclose(self) -> None:
        """Stop reading and close the HTTP response: the provider stops generating (and billing) once it
        notices. Safe to call at any time, more than once."""
        if self._producer is not None and not self._producer.done():
            self._producer.cancel()
            await asyncio.gather(self._producer, return_exceptions=True)

    async def _produce(self) -> None:
        try:
            async for text in self._provider_texts():
                self.received_text += text
                self._queue.put_nowait(text)
            self._queue.put_nowait(_END)
        except Exception as error:  # handed to the reader, who decides what the user sees
            self._queue.put_nowait(error)

    async def _provider_texts(self) -> AsyncIterator[str]:
        attempts = [(primary_provider(), self.model)]
        fallback = fallback_provider()
        if fallback is not None:
            attempts.append((fallback, model_catalogue().fallback.id))
        for position, (provider, model) in enumerate(attempts):
            delivered = False
            try:
                self.provider, self.model = provider.name, model
                async with self._open(provider, model) as response:
                    async for chunk in _sse_chunks(response):
                        if chunk.get("usage"):
                            self.usage = {
                                "prompt_tokens": chunk["usage"]["prompt_tokens"],
                                "completion_tokens": chunk["usage"]["completion_tokens"],
                            }
                        for choice in chunk.get("choices") or ():
                            if choice.get("finish_reason"):
                                self.finish_reason = choice["finish_reason"]
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                delivered = True
                                yield content
                return
            except (openai.OpenAIError, httpx2.HTTPError, ValueError, KeyError, TypeError) as error:
                # The provider's text may echo request details; log it, show the user only a code.
                logger.warning("LLM provider %s failed (model %s): %s", provider.name, model, type(error).__name__)
                if delivered or position == len(attempts) - 1:
                    raise _provider_error(error) from error

    @contextlib.asynccontextmanager
    async def _open(self, provider: Provider, model: str) -> AsyncIterator[httpx2.Response]:
        """The SDK sends the request (auth, base URL, timeouts, retries, HTTP errors as its exceptions) through
        its low-level `post`, which takes the body as it is: the typed `chat.completions.create` first walks
        the messages against the parameter types, a large share of the event loop's work at 50 streams. The
        event stream is parsed in _sse_chunks, for a small fraction of what the SDK's typed chunks cost
        (docs/performance.md)."""
        response = await client_for(provider).post(
            "/chat/completions",
            body={
                "model": model,
                "messages": self.messages,
                "max_tokens": self.max_tokens,
                "temperature": float(self.temperature),
                **self.sampling,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            cast_to=httpx2.Response,
            stream=True,
        )
        try:
            yield response
        finally:
            await response.aclose()


async def _sse_chunks(response) -> AsyncIterator[dict]:
    """The `data:` events of an OpenAI chat completion stream, until `[DONE]`. An error event raises, as the
    SDK's own stream does. Lines are split from the raw bytes (a line ends with LF or CRLF; UTF-8 never has
    that byte inside a character): httpx's text and line decoders on top cost ~a third of reading a stream."""
    pending = b""
    async for block in response.aiter_bytes():
        *lines, pending = (pending + block).split(b"\n")
        for line in lines:
            if (chunk := _sse_data(line, response)) is _DONE:
                return
            if chunk is not None:
                yield chunk
    if (chunk := _sse_data(pending, response)) not in (None, _DONE):
        yield chunk


_DONE = object()


def _sse_data(line: bytes, response):
    """One line of the stream: its JSON chunk, _DONE at `[DONE]`, or None for anything but a data line."""
    if not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if data == b"[DONE]":
        return _DONE
    chunk = json.loads(data)
    if chunk.get("error"):
        raise openai.APIError(
            "The provider reported an error mid-stream.", request=response.request, body=chunk["error"]
        )
    return chunk


class CachedStream:
    """A stored answer (usage.prompt_cache), served through the same interface as CompletionStream."""

    PIECE_CHARS = 64

    def __init__(self, *, messages: list[dict], answer: dict):
        self.messages = messages
        self.model = answer["model"]
        self.provider = "cache"
        self.usage = {"prompt_tokens": answer["prompt_tokens"], "completion_tokens": answer["completion_tokens"]}
        self.finish_reason = "stop"
        self.received_text = answer["text"]

    def start(self) -> "CachedStream":
        return self

    async def __aiter__(self) -> AsyncIterator[str]:
        text = self.received_text
        for offset in range(0, len(text), self.PIECE_CHARS):
            yield text[offset : offset + self.PIECE_CHARS]

    async def aclose(self) -> None:
        pass


async def moderation_categories(text: str) -> list[str] | None:
    """The categories the provider's moderation model flags in `text`, or None if it is not flagged. The primary
    provider is asked, and the fallback (if configured) when the primary fails, as for completions; if both fail
    the last failure is raised. The SDK sends the request; the JSON is read directly (its typed result costs more
    than the rest of the call's own work)."""
    providers = [primary_provider(), *filter(None, [fallback_provider()])]
    for position, provider in enumerate(providers):
        try:
            return await _moderation_of(provider, text)
        except (openai.OpenAIError, httpx2.HTTPError, ValueError, KeyError, TypeError, IndexError) as error:
            if position == len(providers) - 1:
                raise
            logger.warning("Moderation on the %s provider failed (%s); trying the next", provider.name,
                           type(error).__name__)  # fmt: skip


async def _moderation_of(provider: Provider, text: str) -> list[str] | None:
    response = await client_for(provider).post(
        "/moderations", body={"input": text, "model": settings.MODERATION_MODEL}, cast_to=httpx2.Response
    )
    result = response.json()["results"][0]
    if not result["flagged"]:
        return None
    return sorted(name for name, flagged in result["categories"].items() if flagged) or ["flagged"]

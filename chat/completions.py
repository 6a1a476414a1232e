"""The OpenAI-compatible chat completions API (/v1): the chat page's gate, moderation, provider call and
settlement (usage.services, llm.provider), in OpenAI's wire format (../shared/specs/openai: CreateChatCompletion
Request/Response/StreamResponse). Usage records carry source "api" and the key used.
"""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.conf import settings

from chat.services import (
    answer_stream,
    answer_to_cache,
    last_question,
    models_for,
    tokens_used,
)
from core.db import in_db_thread
from core.errors import ApplicationError, InvalidInput, NotFound
from core.text import text_storable
from llm.provider import CachedStream, CompletionStream, ProviderError, model_catalogue
from usage import services as usage
from usage.selectors import plan_for
from users.services import (
    api_key_authenticate,
    api_key_hash,
    api_key_plausible,
    api_key_use_unrecorded,
    api_key_used,
)

logger = logging.getLogger(__name__)

ROLES = {"system", "developer", "user", "assistant"}
# Parameters the OpenAI API accepts that we cannot honour: refused by name rather than silently ignored.
UNSUPPORTED = {
    "tools": "Tool calls are not supported.",
    "tool_choice": "Tool calls are not supported.",
    "functions": "Function calls are not supported.",
    "function_call": "Function calls are not supported.",
    "audio": "Audio output is not supported.",
    "prediction": "Predicted outputs are not supported.",
    "top_logprobs": "Log probabilities are not supported.",
}


class AuthenticationFailed(ApplicationError):
    code = "invalid_api_key"
    http_status = 401
    default_message = "Invalid API key: create one on the API keys page and send it as 'Authorization: Bearer <key>'."


def api_key_of(token: str):
    """The active API key `token` stands for, or AuthenticationFailed."""
    key = api_key_authenticate(token)
    if key is None:
        raise AuthenticationFailed()
    return key


class ModelForbidden(ApplicationError):
    code = "model_not_in_plan"
    http_status = 403


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[dict]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: Decimal | None
    sampling: dict  # the other sampling parameters, passed on to the provider as they came (_sampling)


def _invalid(message: str, param: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_request", param=param)


def completion_request_parse(body) -> CompletionRequest:
    """Check a request body; unknown fields the OpenAI API accepts are ignored, unsupported ones refused."""
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object.", None)
    for name, reason in UNSUPPORTED.items():
        if body.get(name) not in (None, [], {}):
            raise _invalid(reason, name)
    if body.get("n") not in (None, 1):
        raise _invalid("Only n=1 is supported.", "n")
    if body.get("logprobs") not in (None, False):
        raise _invalid("Log probabilities are not supported.", "logprobs")
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise _invalid("Only text responses are supported.", "response_format")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required.", "model")
    messages = _messages(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("'stream' must be true or false.", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise _invalid("'stream_options' must be an object.", "stream_options")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _invalid("'max_tokens' must be a positive integer.", "max_tokens")
    temperature = body.get("temperature")
    if temperature is not None:
        try:
            temperature = Decimal(str(temperature))
        except InvalidOperation:
            temperature = None
        if (
            isinstance(body.get("temperature"), bool)
            or temperature is None
            or not temperature.is_finite()
            or not 0 <= temperature <= 2
        ):
            raise _invalid("'temperature' must be a number from 0 to 2.", "temperature")
    return CompletionRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage")),
        max_tokens=max_tokens,
        temperature=temperature,
        sampling=_sampling(body),
    )


# Sampling parameters every OpenAI-compatible provider takes, with the ranges OpenAI's spec gives and the value
# that means "not set". They change the answer (a stop sequence also ends it sooner, and so costs less), so they
# are passed on, never dropped; a value at its default is left out, as if not sent.
_NUMBER_PARAMETERS = {"top_p": (0, 1, 1), "presence_penalty": (-2, 2, 0), "frequency_penalty": (-2, 2, 0)}
_SEED_RANGE = (-(2**63), 2**63 - 1)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sampling(body: dict) -> dict:
    """The request's stop sequences, nucleus sampling, penalties, seed and logit bias, checked."""
    sampling = {}
    stop = body.get("stop")
    if stop not in (None, []):
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(each, str) and each for each in stops):
            raise _invalid("'stop' must be a string or a list of up to 4 non-empty strings.", "stop")
        sampling["stop"] = stop
    for name, (low, high, default) in _NUMBER_PARAMETERS.items():
        value = body.get(name)
        if value is None:
            continue
        if not _number(value) or not low <= value <= high:
            raise _invalid(f"'{name}' must be a number from {low} to {high}.", name)
        if value != default:
            sampling[name] = value
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
            raise _invalid("'seed' must be a 64-bit integer.", "seed")
        sampling["seed"] = seed
    logit_bias = body.get("logit_bias")
    if logit_bias not in (None, {}):
        if (
            not isinstance(logit_bias, dict)
            or len(logit_bias) > 1024
            or not all(token.isdigit() and _number(bias) and -100 <= bias <= 100 for token, bias in logit_bias.items())
        ):
            raise _invalid("'logit_bias' must map token ids to numbers from -100 to 100.", "logit_bias")
        sampling["logit_bias"] = logit_bias
    return sampling


def _messages(messages) -> list[dict]:
    """The messages as the provider takes them: role and text (text content parts are joined)."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty list.", "messages")
    cleaned, characters = [], 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _invalid(f"messages[{index}] needs a role: one of {', '.join(sorted(ROLES))}.", "messages")
        content = message.get("content")
        if isinstance(content, list):
            if any(not isinstance(part, dict) or part.get("type") != "text" for part in content):
                raise _invalid(f"messages[{index}]: only text content is supported.", "messages")
            content = "".join(str(part.get("text", "")) for part in content)
        if not isinstance(content, str):
            raise _invalid(f"messages[{index}].content must be text.", "messages")
        if not text_storable(content):
            raise _invalid(f"messages[{index}].content has a NUL character or a lone surrogate.", "messages")
        characters += len(content)
        cleaned.append({"role": "system" if message["role"] == "developer" else message["role"], "content": content})
    if characters > settings.API_MAX_PROMPT_CHARS:
        raise InvalidInput(
            f"The messages are too long ({characters:,} characters; the limit is {settings.API_MAX_PROMPT_CHARS:,}).",
            code="context_length_exceeded",
            param="messages",
        )
    return cleaned


async def completion_admit(*, token: str, request: CompletionRequest) -> usage.Admission:
    """The key, then the model checked against the configured ones and the key owner's plan, then the usage
    gate; the key is found by the gate's own query. The key's use is recorded once the gate let the request
    through."""
    if not api_key_plausible(token):
        raise AuthenticationFailed()
    holder, state = _key_holder(await usage.gate_state_for_api_key(key_hash=api_key_hash(token)))
    admission = await usage.gate_admit(**_gate_arguments(holder, state, request))
    if api_key_use_unrecorded(holder.api_key_last_used_at):  # once a minute at most
        await in_db_thread(api_key_used)(key_id=holder.api_key_id, last_used_at=holder.api_key_last_used_at)
    return admission


def _key_holder(found):
    """The key's holder and gate state, or AuthenticationFailed."""
    if found is None:
        raise AuthenticationFailed()
    return found


def _gate_arguments(holder, state: usage.GateState, request: CompletionRequest) -> dict:
    """The requested model checked against the configured ones and the plan; the gate's arguments."""
    if model_catalogue().get(request.model) is None:
        raise NotFound(f"The model '{request.model}' does not exist.", code="model_not_found", param="model")
    if not state.plan.allows_model(request.model):
        raise ModelForbidden(f"Your plan does not include the model '{request.model}'.", param="model")
    return {
        "user": holder.user,
        "state": state,
        "model": request.model,
        "prompt": request.messages,
        "source": "api",
        # An explicit temperature asks for a fresh answer; other sampling parameters, for an answer of their own.
        "cacheable": request.temperature is None and not request.sampling,
        "max_tokens": request.max_tokens,
        "api_key_id": holder.api_key_id,
    }


def models_list(*, token: str) -> dict:
    """GET /v1/models: the models the key's owner may use."""
    allowed, _ = models_for(plan_for(user=api_key_of(token).user))
    return {"object": "list", "data": [_model_object(model) for model in allowed]}


def model_get(*, token: str, model_id: str) -> dict:
    """GET /v1/models/{model}: one of the models the key's owner may use; any other is not found, as in the
    list."""
    allowed, _ = models_for(plan_for(user=api_key_of(token).user))
    if model_id not in allowed:
        raise NotFound(f"The model '{model_id}' does not exist.", code="model_not_found", param="model")
    return _model_object(model_id)


def _model_object(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "aisaas"}


async def completion_open(*, token: str, request: CompletionRequest) -> "OpenCompletion":
    """Through the key check, the gate and moderation of the last user message, then the provider request
    is sent (or the cached answer served). A refusal gives back everything the gate held."""
    admission = await completion_admit(token=token, request=request)
    await usage.moderate_or_release(admission=admission, text=last_question(request.messages))
    stream = answer_stream(
        admission=admission,
        messages=request.messages,
        model=request.model,
        temperature=request.temperature if request.temperature is not None else settings.LLM_TEMPERATURE,
        sampling=request.sampling,
    )
    return OpenCompletion(request, admission, stream)


@dataclass
class OpenCompletion:
    request: CompletionRequest
    admission: usage.Admission
    stream: CompletionStream | CachedStream
    id: str = ""
    created: int = 0

    def __post_init__(self):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    async def text(self) -> str:
        """The whole answer (non-streaming), settled however it ends: complete, a provider error, or the client
        going away (the provider stream is then closed, and what it had sent is accounted)."""
        parts, status = [], "complete"
        try:
            async for piece in self.stream:
                parts.append(piece)
        except ProviderError:
            status = "error"
            raise
        except BaseException:
            status = "stopped"
            raise
        finally:
            await self.stream.aclose()
            await asyncio.shield(self.settle("".join(parts), status))
        return "".join(parts)

    async def events(self) -> AsyncIterator[str]:
        """The answer as server-sent events in OpenAI's chunk format, settled however it ends (complete, a
        provider error, the client going away). A complete answer is settled before its last events, so a
        client that has read `[DONE]` finds the call accounted."""
        parts, status, settled = [], "complete", False
        try:
            yield _event(self._chunk({"role": "assistant", "content": ""}))
            async for piece in self.stream:
                parts.append(piece)
                yield _event(self._chunk({"content": piece}))
            settled = True
            await asyncio.shield(self.settle("".join(parts), status))
            yield _event(self._chunk({}, finish_reason=self.stream.finish_reason or "stop"))
            if self.request.include_usage:
                yield _event({**self._chunk(None), "choices": [], "usage": self.usage()})
            yield "data: [DONE]\n\n"
        except ProviderError as error:
            status = "error"
            error_body = {"message": str(error), "type": "server_error", "code": error.code, "param": None}
            yield _event({"error": {**error_body, "usage": self.usage(failed=True)}})
        except BaseException:
            status = "stopped"  # the client went away: what was produced is still accounted
            raise
        finally:
            await self.stream.aclose()
            if not settled:
                await asyncio.shield(self.settle("".join(parts), status))

    def usage(self, *, failed: bool = False) -> dict:
        """What the call is accounted for (chat.services.tokens_used), in OpenAI's shape."""
        prompt, completion = tokens_used(self.stream, failed=failed)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def response(self, text: str) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.stream.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": self.stream.finish_reason or "stop",
                    "logprobs": None,
                }
            ],
            "usage": self.usage(),
        }

    def _chunk(self, delta: dict | None, finish_reason: str | None = None) -> dict:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.stream.model}
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        return chunk

    async def settle(self, text: str, status: str) -> None:
        used = self.usage(failed=status == "error")
        await completion_settle(
            admission=self.admission,
            stream=self.stream,
            text=text,
            status=status,
            prompt_tokens=used["prompt_tokens"],
            completion_tokens=used["completion_tokens"],
        )


async def completion_settle(*, admission, stream, text: str, status: str, prompt_tokens: int, completion_tokens: int):
    """The API's settlement: the usage record, quota, spend and rollups (no conversation is kept), the rate
    limiter's unused tokens back and a complete answer into the prompt cache."""
    settlement = await usage.usage_settle(
        admission=admission,
        conversation_id=None,
        message_id=None,
        model=stream.model,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached=isinstance(stream, CachedStream),
        cache_answer=answer_to_cache(admission=admission, stream=stream, text=text, complete=status == "complete"),
    )
    return settlement.meter


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"

"""The dev LLM's ASGI app: POST /v1/chat/completions, POST /v1/moderations, GET /v1/models.

Wire format follows OpenAI's API spec (shared/specs/openai/openapi.yaml): CreateChatCompletionResponse,
CreateChatCompletionStreamResponse (SSE, with the usage chunk when stream_options.include_usage), the
moderation response and the Error object.
"""

import asyncio
import hashlib
import json
import time

from llm.devllm.behaviour import (
    Behaviour,
    answer_tokens,
    cut_at_stop,
    last_user_text,
    moderation_result,
    prompt_token_count,
    sampling_tokens,
)

MODELS = ("demo-mini", "demo-large")
MAX_BODY_BYTES = 4 * 1024 * 1024


def make_app(defaults: Behaviour, *, api_key: str | None = None):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        route = (scope["method"], scope["path"].rstrip("/"))
        if route not in ROUTES:
            await _error(send, 404, f"Unknown route {scope['method']} {scope['path']}", "invalid_request_error")
            return
        if not _bearer(scope) or (api_key is not None and _bearer(scope) != api_key):
            await _error(send, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            return
        body = await _read_body(receive)
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            await _error(send, 400, "The request body is not valid JSON.", "invalid_request_error")
            return
        await ROUTES[route](payload, defaults, receive, send)

    return app


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _bearer(scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization" and value.lower().startswith(b"bearer "):
            return value[7:].decode().strip()
    return ""


async def _read_body(receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES or not message.get("more_body"):
            return b"".join(chunks)


async def _json(send, status: int, body: dict):
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _error(send, status: int, message: str, error_type: str, code: str | None = None, param=None):
    await _json(send, status, {"error": {"message": message, "type": error_type, "param": param, "code": code}})


async def _models(payload, defaults, receive, send):
    await _json(
        send,
        200,
        {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "devllm"} for m in MODELS],
        },
    )


async def _moderations(payload, defaults, receive, send):
    inputs = payload.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
        await _error(
            send, 400, "'input' must be a string or a list of strings.", "invalid_request_error", param="input"
        )
        return
    await _json(
        send,
        200,
        {
            "id": "modr-" + hashlib.sha256("".join(inputs).encode()).hexdigest()[:24],
            "model": payload.get("model") or "omni-moderation-latest",
            "results": [moderation_result(text) for text in inputs],
        },
    )


async def _wait_for_disconnect(receive):
    while (await receive())["type"] != "http.disconnect":
        pass


async def _chat_completions(payload, defaults, receive, send):
    messages = payload.get("messages")
    model = payload.get("model")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        await _error(send, 400, "'messages' must be a non-empty list.", "invalid_request_error", param="messages")
        return
    if not isinstance(model, str) or not model:
        await _error(send, 400, "'model' is required.", "invalid_request_error", param="model")
        return
    behaviour = defaults.overridden_by(last_user_text(messages))
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens") or behaviour.tokens
    if behaviour.echo == "sampling":
        tokens = sampling_tokens(payload)
    else:
        tokens = answer_tokens(messages, length=min(behaviour.tokens, int(max_tokens)))
    tokens, stopped = cut_at_stop(tokens, payload.get("stop"))
    finish_reason = "length" if int(max_tokens) < behaviour.tokens and not stopped else "stop"
    usage = {
        "prompt_tokens": prompt_token_count(messages),
        "completion_tokens": len(tokens),
        "total_tokens": prompt_token_count(messages) + len(tokens),
    }
    completion_id = "chatcmpl-" + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:24]
    created = int(time.time())

    if behaviour.fault == "hang":
        await _wait_for_disconnect(receive)
        return
    await asyncio.sleep(behaviour.ttft_ms / 1000)
    if behaviour.fault == "error_before":
        await _error(send, 500, "The dev LLM was told to fail (fault=error_before).", "server_error")
        return

    if not payload.get("stream"):
        await asyncio.sleep(behaviour.interval_ms * max(len(tokens) - 1, 0) / 1000)
        await _json(
            send,
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
                "system_fingerprint": "devllm",
            },
        )
        return

    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    await _stream(
        send,
        receive,
        tokens=tokens,
        behaviour=behaviour,
        chunk_base={"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model},
        finish_reason=finish_reason,
        usage=usage if include_usage else None,
    )


async def _stream(send, receive, *, tokens, behaviour, chunk_base, finish_reason, usage):
    usage_field = {"usage": None} if usage else {}

    def event(choices, **extra) -> dict:
        body = json.dumps({**chunk_base, "system_fingerprint": "devllm", "choices": choices, **usage_field, **extra})
        return {"type": "http.response.body", "body": f"data: {body}\n\n".encode(), "more_body": True}

    def delta(content_delta: dict, finish=None) -> dict:
        return event([{"index": 0, "delta": content_delta, "logprobs": None, "finish_reason": finish}])

    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    try:
        await send(delta({"role": "assistant", "content": "", "refusal": None}))
        for position, token in enumerate(tokens):
            if position and behaviour.interval_ms:
                await asyncio.sleep(behaviour.interval_ms / 1000)
            if position == behaviour.fault_after and behaviour.fault in ("error_mid", "hang_mid"):
                if behaviour.fault == "hang_mid":
                    await _wait_for_disconnect(receive)
                    return
                error = {"message": "The dev LLM was told to fail (fault=error_mid).", "type": "server_error"}
                body = json.dumps({"error": {**error, "param": None, "code": None}})
                await send({"type": "http.response.body", "body": f"data: {body}\n\n".encode(), "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            await send(delta({"content": token}))
        await send(delta({}, finish=finish_reason))
        if usage:
            await send(event([], usage=usage))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    except OSError:
        # The client went away (stopped or cancelled): nothing more to send.
        return


ROUTES = {
    ("GET", "/v1/models"): _models,
    ("POST", "/v1/chat/completions"): _chat_completions,
    ("POST", "/v1/moderations"): _moderations,
}

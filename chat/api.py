"""The OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models and /v1/models/{model}, for the official
SDKs; any other /v1 URL is an OpenAI-shaped 404. Thin:
chat.completions does the work. Every error is in OpenAI's shape, {"error": {message, type, code, param}},
with the status the SDKs turn into their own exception classes.

Served by a plain ASGI app beside Django's (aisaas/asgi.py), not by Django views: the API needs none of
Django's request machinery (sessions, CSRF, templates, middleware), which cost several milliseconds a request
(docs/performance.md), on every call's time to first token. What it
does need is done here: the Host check against ALLOWED_HOSTS, a body size limit, `nosniff`, and the
provider stream cancelled (and the call settled as stopped) when the client goes away.
"""

import asyncio
import contextlib
import json
import logging

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from chat import completions
from core.db import in_db_thread
from core.errors import ApplicationError, InvalidInput
from core.middleware import limit_headers, rate_limit_headers
from core.text import json_parsed
from llm.provider import ProviderError
from users.services import bearer_token

logger = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class UpstreamFailed(ApplicationError):
    """The model provider failed (our fallback too); the call was still accounted."""

    code = "upstream_error"
    http_status = 502


class BodyTooLarge(ApplicationError):
    code = "request_too_large"
    http_status = 413


class UnknownUrl(ApplicationError):
    code = "unknown_url"
    http_status = 404


class Response:
    """What one API call sends: a status, headers and a JSON body."""

    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}

    async def send(self, send) -> None:
        content = json.dumps(self.body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": _headers({"Content-Type": "application/json", **self.headers}),
            }
        )
        await send({"type": "http.response.body", "body": content})


def _headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(b"x-content-type-options", b"nosniff")] + [
        (name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()
    ]


def openai_error(error: ApplicationError) -> Response:
    details = {k: v for k, v in error.details.items() if k != "param"}
    body = {
        "message": error.message,
        "type": ERROR_TYPES.get(error.http_status, "server_error"),
        "code": error.code,
        "param": error.details.get("param"),
        **details,
    }
    return Response(error.http_status, {"error": body}, limit_headers(error))


def _method_not_allowed(allowed: str) -> Response:
    response = openai_error(ApplicationError(f"Use {allowed}.", code="method_not_allowed"))
    response.status = 405
    response.headers["Allow"] = allowed
    return response


async def _body(receive) -> bytes:
    """The request body, at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes (Django's own limit)."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        size += len(message.get("body", b""))
        if size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise BodyTooLarge(f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes.")
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _admitted_headers(admission) -> dict[str, str]:
    """The call's id, as OpenAI sends its own (the SDKs show it as `_request_id`): the usage record's, for support.
    And the requests-per-minute limit after this call, in the headers a refusal sends for the limit that refused,
    so that a client can pace itself before it is refused."""
    rate = admission.requests_per_minute
    return {
        "X-Request-Id": admission.request_id,
        **rate_limit_headers(limit=rate.limit, remaining=rate.remaining, reset_at=rate.reset_at),
    }


async def chat_completions(token: str, body: bytes, send) -> Response | None:
    """POST /v1/chat/completions. Returns the response to send, or None once it streamed its answer."""
    try:
        try:
            request = completions.completion_request_parse(json_parsed(body))
        except (ValueError, UnicodeDecodeError, ApplicationError) as error:
            # A bad key is told so first, whatever it sent; otherwise the key is checked with the gate.
            await in_db_thread(completions.api_key_of)(token)
            if isinstance(error, ApplicationError):
                raise
            raise InvalidInput("The body is not valid JSON.", code="invalid_json") from None
        completion = await completions.completion_open(token=token, request=request)
    except ApplicationError as error:
        return openai_error(error)
    admitted = _admitted_headers(completion.admission)
    if not completion.request.stream:
        try:
            return Response(200, completion.response(await completion.text()), admitted)
        except ProviderError as error:  # the body says what the call was accounted for (nothing, before any text)
            response = openai_error(UpstreamFailed(str(error), code=error.code, usage=completion.usage(failed=True)))
            response.headers.update(admitted)
            return response
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            # No proxy may hold the tokens back.
            "headers": _headers(
                {
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                    **admitted,
                }
            ),
        }
    )
    async for event in completion.events():
        await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    return None


async def models(token: str, model_id: str | None) -> Response:
    """GET /v1/models, or GET /v1/models/{model_id}."""
    try:
        if model_id is None:
            return Response(200, await in_db_thread(completions.models_list)(token=token))
        return Response(200, await in_db_thread(completions.model_get)(token=token, model_id=model_id))
    except ApplicationError as error:
        return openai_error(error)


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def application(scope, receive, send) -> None:
    """The ASGI app for every /v1 URL (aisaas/asgi.py routes them here)."""
    headers = dict(scope["headers"])
    host, _ = split_domain_port(headers.get(b"host", b"").decode("latin-1"))
    if not validate_host(host, settings.ALLOWED_HOSTS):
        error = ApplicationError("This host is not served here.", code="invalid_host")
        return await openai_error(error).send(send)
    token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
    method = scope["method"]
    started = False

    async def send_tracked(message):
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    path = scope["path"]
    try:
        if path == "/v1/chat/completions":
            if method == "POST":
                answer = chat_completions(token, await _body(receive), send_tracked)
                response = await _answered_unless_gone(answer, receive)
            else:
                response = _method_not_allowed("POST")
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            model_id = path.removeprefix("/v1/models/") if path != "/v1/models" else None
            response = await models(token, model_id) if method == "GET" else _method_not_allowed("GET")
        else:  # as OpenAI answers a URL it does not serve; the SDKs raise NotFoundError
            served = "/v1/chat/completions and /v1/models"
            response = openai_error(UnknownUrl(f"Unknown request URL: {method} {path}. This server serves {served}."))
    except BodyTooLarge as error:
        response = openai_error(error)
    except asyncio.CancelledError:
        return  # the client went away
    except Exception:
        logger.exception("API call failed")
        if started:  # mid-stream: the answer was settled (OpenCompletion.events); end the stream cut short
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b""})
            return
        response = openai_error(ApplicationError("Something went wrong. Please try again.", code="server_error"))
        response.status = 500
    if response is not None:
        await response.send(send)


async def _answered_unless_gone(answer, receive) -> Response | None:
    """Run `answer` while watching for the client to go away: then it is cancelled, which stops the provider
    stream and settles the call for what was produced (completions.OpenCompletion.events)."""
    answering = asyncio.ensure_future(answer)
    gone = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({answering, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (gone, answering):
            if not task.done():
                task.cancel()
        await asyncio.gather(answering, gone, return_exceptions=True)
    if answering.cancelled():
        raise asyncio.CancelledError
    return answering.result()

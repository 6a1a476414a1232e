"""The OpenAI-compatible API: POST /v1/chat/completions and GET /v1/models, for the official SDKs. Thin:
chat.completions does the work. Every error is in OpenAI's shape, {"error": {message, type, code, param}},
with the status the SDKs turn into their own exception classes."""

import json
import logging

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from aisaas.db import in_db_thread
from aisaas.errors import ApplicationError, InvalidInput
from aisaas.middleware import limit_headers
from aisaas.users.services import bearer_token
from chat import completions
from chat.llm import ProviderError

logger = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
}


class UpstreamFailed(ApplicationError):
    """The model provider failed (our fallback too); the call was still accounted."""

    code = "upstream_error"
    http_status = 502


def openai_error(error: ApplicationError) -> JsonResponse:
    details = {k: v for k, v in error.details.items() if k != "param"}
    body = {
        "message": error.message,
        "type": ERROR_TYPES.get(error.http_status, "server_error"),
        "code": error.code,
        "param": error.details.get("param"),
        **details,
    }
    response = JsonResponse({"error": body}, status=error.http_status)
    for header, value in limit_headers(error).items():
        response[header] = value
    return response


def _token(request) -> str:
    return bearer_token(request.headers.get("Authorization", ""))


def _method_not_allowed(allowed: str) -> JsonResponse:
    response = openai_error(ApplicationError(f"Use {allowed}.", code="method_not_allowed"))
    response.status_code = 405
    response["Allow"] = allowed
    return response


@csrf_exempt
async def chat_completions(request) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed("POST")
    token = _token(request)
    try:
        try:
            completion_request = completions.completion_request_parse(json.loads(request.body))
        except (ValueError, UnicodeDecodeError, ApplicationError) as error:
            # A bad key is told so first, whatever it sent; the key is checked with the gate otherwise.
            await in_db_thread(completions.api_key_of)(token)
            if isinstance(error, ApplicationError):
                raise
            raise InvalidInput("The body is not valid JSON.", code="invalid_json") from None
        completion = await completions.completion_open(token=token, request=completion_request)
    except ApplicationError as error:
        return openai_error(error)
    if completion.request.stream:
        response = StreamingHttpResponse(completion.events(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # proxies must not hold the tokens back
        return response
    try:
        text = await completion.text()
    except ProviderError as error:
        return openai_error(UpstreamFailed(str(error), code=error.code))
    return JsonResponse(completion.response(text))


@csrf_exempt
async def models(request) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        return JsonResponse(await in_db_thread(completions.models_list)(token=_token(request)))
    except ApplicationError as error:
        return openai_error(error)

"""Django REST framework's one exception handler (REST_FRAMEWORK["EXCEPTION_HANDLER"]): every JSON endpoint of
the pages and the REST API answers an error as {"error": {"code", "message", ...}}, as the ApplicationError family
does everywhere else (core.middleware)."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError, InvalidInput
from core.middleware import limit_headers

# REST framework's own errors, by the code they answer with, and the message they get (None: REST framework's).
_CODES = {
    exceptions.ParseError: ("invalid_json", "The request body is not valid JSON."),
    exceptions.ValidationError: ("invalid", None),
    exceptions.NotAuthenticated: ("unauthenticated", "Sign in first, or send an API key."),
    exceptions.AuthenticationFailed: ("unauthenticated", None),
    exceptions.PermissionDenied: ("forbidden", None),
    exceptions.NotFound: ("not_found", None),
    exceptions.MethodNotAllowed: ("method_not_allowed", None),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", None),
    exceptions.Throttled: ("rate_limited", None),
}


def exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return Response({"error": exc.as_dict()}, status=exc.http_status, headers=limit_headers(exc))
    response = drf_exception_handler(exc, context)  # REST framework's errors (Http404 and Django's PermissionDenied)
    if response is None:
        return None  # anything else is a server error: logged with its traceback, a generic 500
    code, message = next((answer for kind, answer in _CODES.items() if isinstance(exc, kind)), ("error", None))
    error = {"code": code, "message": message or _message(response.data)}
    if isinstance(exc, exceptions.ValidationError) and isinstance(response.data, dict):
        error["fields"] = response.data
    response.data = {"error": error}
    return response


@csrf_exempt  # it changes nothing, whatever the method: a 404, not a CSRF refusal
def api_not_found(request, *args, **kwargs) -> JsonResponse:
    """A path under /api/ that no endpoint serves: the API's own 404, not the site's HTML page."""
    return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)


def _message(data) -> str:
    """REST framework's words for an error ({"detail": ...}, or a serializer's errors), as one sentence."""
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    if isinstance(data, dict):
        return " ".join(f"{field}: {' '.join(map(str, errors if isinstance(errors, list) else [errors]))}"
                        for field, errors in data.items())  # fmt: skip
    if isinstance(data, list):
        return " ".join(map(str, data))
    return str(data)


class Pagination(LimitOffsetPagination):
    """`?limit=` (1 to max_limit) and `?offset=` (0 or more), or a 400 naming the one that is not a whole number in
    its range (REST framework would quietly use its default instead). An offset past any table is simply the end:
    it is capped where PostgreSQL's 64-bit counts still hold it."""

    max_limit = 500
    MAX_OFFSET = 10**12

    def get_limit(self, request):
        return self._whole_number(request, self.limit_query_param, minimum=1, maximum=self.max_limit,
                                  default=self.default_limit)  # fmt: skip

    def get_offset(self, request):
        return min(self._whole_number(request, self.offset_query_param, minimum=0, default=0), self.MAX_OFFSET)

    @staticmethod
    def _whole_number(request, name: str, *, minimum: int, default: int, maximum: int | None = None) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
            raise InvalidInput(f"`{name}` must be a whole number of {minimum} or more.", field=name)
        return min(int(raw), maximum) if maximum else int(raw)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum = 1 if parameter["name"] == self.limit_query_param else 0
            parameter["schema"] = {**parameter["schema"], "minimum": minimum}
        return parameters


# What any request to the REST API may be answered, besides its success: documented on every operation of the
# schema (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]), each with the one error body.
_DOCUMENTED_ERRORS = {
    "400": "The request is not valid: `error.code` says why, `error.field` or `error.fields` which part.",
    "401": "No valid API key or session.",
    "403": "Signed in by session, without the CSRF token.",
    "404": "No such object among yours (another user's is not found either).",
}
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


def schema_errors_documented(result, generator, request, public):
    """drf-spectacular's postprocessing hook: every operation documents the errors in _DOCUMENTED_ERRORS (and 415
    where it takes a body), with the error body every endpoint answers (exception_handler)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            errors = dict(_DOCUMENTED_ERRORS)
            if "requestBody" in operation:
                errors["415"] = "The body is not JSON."
            for status, description in errors.items():
                operation["responses"].setdefault(status, {"description": description, "content": body})
    return result

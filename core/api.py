"""Django REST framework's one exception handler (REST_FRAMEWORK["EXCEPTION_HANDLER"]): every JSON endpoint of
the pages and the REST API answers an error as {"error": {"code", "message", ...}}, as the ApplicationError family
does everywhere else (core.middleware)."""

from rest_framework import exceptions
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError
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
    """`?limit=` and `?offset=` as REST framework reads them, within what PostgreSQL takes: a page of at most
    MAX_LIMIT, and an offset past any table is simply the end (a 64-bit overflow was a 500)."""

    max_limit = 500
    MAX_OFFSET = 10**12

    def get_offset(self, request):
        return min(super().get_offset(request), self.MAX_OFFSET)

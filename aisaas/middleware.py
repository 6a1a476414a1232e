import logging
from datetime import datetime

from django.conf import settings
from django.http import JsonResponse

from aisaas.errors import ApplicationError

logger = logging.getLogger(__name__)


class ContentSecurityPolicyMiddleware:
    """Sends CONTENT_SECURITY_POLICY on every response: no inline or third-party script can run, so a
    sanitiser miss in rendered Markdown still cannot execute code."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class ApplicationErrorMiddleware:
    """Turns an ApplicationError raised by a view into a JSON error body with its status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, ApplicationError):
            return None
        response = JsonResponse({"error": exception.as_dict()}, status=exception.http_status)
        for header, value in limit_headers(exception).items():
            response[header] = value
        return response


def limit_headers(error: ApplicationError) -> dict[str, str]:
    """When a limit refused a request: when to come back (Retry-After) and the limit's state (X-RateLimit-*,
    the reset as epoch seconds)."""
    details, headers = error.details, {}
    if "retry_after" in details:
        headers["Retry-After"] = str(details["retry_after"])
    if "limit_value" in details:
        headers["X-RateLimit-Limit"] = str(details["limit_value"])
        headers["X-RateLimit-Remaining"] = str(details["remaining"])
        headers["X-RateLimit-Reset"] = str(round(datetime.fromisoformat(details["reset_at"]).timestamp()))
    return headers

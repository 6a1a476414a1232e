import logging
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse
from django.utils.deprecation import MiddlewareMixin
from whitenoise.middleware import WhiteNoiseMiddleware

from core.errors import ApplicationError

logger = logging.getLogger(__name__)


# Every middleware here works both ways (MiddlewareMixin): one sync-only middleware would put every async
# view (the /v1 API) behind a hop to the single sync thread, shared by all requests.


class StaticFilesMiddleware(MiddlewareMixin):
    """WhiteNoise's static files, for sync and async requests alike: WhiteNoise's middleware is sync-only,
    so it is asked only for paths under STATIC_URL, in a pool thread; every other request passes straight
    on."""

    def __init__(self, get_response):
        super().__init__(get_response)
        self.whitenoise = WhiteNoiseMiddleware(get_response)
        self.serve_static = sync_to_async(self._static_response, thread_sensitive=False)

    def _static_response(self, request):
        whitenoise = self.whitenoise
        path = request.path_info
        static_file = whitenoise.find_file(path) if whitenoise.autorefresh else whitenoise.files.get(path)
        return whitenoise.serve(static_file, request) if static_file is not None else None

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        if request.path_info.startswith(settings.STATIC_URL):
            response = self._static_response(request)
            if response is not None:
                return response
        return self.get_response(request)

    async def __acall__(self, request):
        if request.path_info.startswith(settings.STATIC_URL):
            response = await self.serve_static(request)
            if response is not None:
                return response
        return await self.get_response(request)


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Sends CONTENT_SECURITY_POLICY on every response: no inline or third-party script can run, so a
    sanitiser miss in rendered Markdown still cannot execute code."""

    def process_response(self, request, response):
        response.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class ApplicationErrorMiddleware(MiddlewareMixin):
    """Turns an ApplicationError raised by a view into a JSON error body with its status."""

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
        limit, remaining = details["limit_value"], details["remaining"]
        # When all of the limit is back: for a rate limit, later than Retry-After (when the next request passes);
        # for the period's quota, its end, when both come together.
        reset_at = datetime.fromisoformat(details.get("limit_reset_at", details["reset_at"])).timestamp()
        headers.update(rate_limit_headers(limit=limit, remaining=remaining, reset_at=reset_at))
    return headers


def rate_limit_headers(*, limit: int, remaining: int, reset_at: float) -> dict[str, str]:
    """A limit's state as X-RateLimit-Limit/Remaining/Reset (the reset as epoch seconds), on a refusal for the
    limit that refused and on an API answer for its requests-per-minute limit (chat.api)."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(round(reset_at)),
    }

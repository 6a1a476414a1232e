"""The one family of errors a user may see. Services raise these; views and consumers translate them in one
place each (core.middleware for HTTP, chat.consumers for the websocket). The message is written for the
user: never a stack trace, a secret or an internal identifier."""

import re

from django.views.debug import SafeExceptionReporterFilter


class ApplicationError(Exception):
    code = "error"
    http_status = 400
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, code: str | None = None, **details):
        self.message = message or self.default_message
        if code:
            self.code = code
        self.details = details
        super().__init__(self.message)

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidInput(ApplicationError):
    code = "invalid"
    default_message = "The request is not valid."


class NotFound(ApplicationError):
    """Also the answer for other users' objects, so ids cannot be probed."""

    code = "not_found"
    http_status = 404
    default_message = "Not found."


class Conflict(ApplicationError):
    code = "conflict"
    http_status = 409
    default_message = "That cannot be done right now."


class ServiceUnavailable(ApplicationError):
    """A dependency failed; the client may retry after `retry_after` seconds (the frame's field, the HTTP
    Retry-After header)."""

    code = "unavailable"
    http_status = 503
    default_message = "The service is temporarily unavailable. Please try again."
    retry_after_seconds = 5

    def __init__(self, message: str | None = None, *, code: str | None = None, **details):
        super().__init__(message, code=code, **{"retry_after": self.retry_after_seconds, **details})


class CredentialMaskingReporterFilter(SafeExceptionReporterFilter):
    """Django's filter for error reports, which masks settings named like API_KEY, TOKEN, SECRET or PASSWORD,
    also masking the ones that carry a credential inside a value: service URLs (user:password@host), and the
    settings built from them; and form fields named like them, whether or not the view marked them sensitive."""

    hidden_settings = re.compile(
        r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|_URL$|DSN|DATABASES|CACHES|CHANNEL_LAYERS|BROKER",
        flags=re.IGNORECASE,
    )

    def get_post_parameters(self, request):
        parameters = super().get_post_parameters(request)
        if request is None or not parameters:
            return parameters
        cleansed = parameters.copy()
        for name in cleansed:
            if self.hidden_settings.search(name):
                cleansed[name] = self.cleansed_substitute
        return cleansed

"""Refusals of the usage gate. Each carries what a client needs to show it (which limit, what is left,
when to retry) and maps to an HTTP status for the API."""

from core.errors import ApplicationError


class LimitReached(ApplicationError):
    """A per-user limit refused the request. Details say which, what is left, and when to retry."""

    code = "rate_limited"
    http_status = 429


class SpendCapReached(ApplicationError):
    code = "spend_cap"
    http_status = 503


class ContentFlagged(ApplicationError):
    code = "moderation_flagged"
    http_status = 403


class AccountSuspended(ApplicationError):
    """Staff suspended the user's access to paid calls."""

    code = "account_suspended"
    http_status = 403

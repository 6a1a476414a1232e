"""What the operator commands share: finding a user by e-mail address, and turning a service's refusal into the
command's error (a message and exit code 1, no traceback)."""

import contextlib

from django.core.management.base import CommandError

from core.errors import ApplicationError
from users.models import User


def user_by_email(email: str) -> User:
    user = User.objects.filter(email__iexact=email.strip()).first()
    if user is None:
        raise CommandError(f"No user has the address {email!r}.")
    return user


def staff_by_email(email: str) -> User:
    """The staff member an audited action is written down as done by."""
    actor = user_by_email(email)
    if not actor.is_staff:
        raise CommandError(f"{actor.email} is not staff: the audit trail names a staff member.")
    return actor


@contextlib.contextmanager
def refusals_as_errors():
    try:
        yield
    except ApplicationError as error:
        raise CommandError(error.message) from None

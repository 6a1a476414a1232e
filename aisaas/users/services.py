from allauth.account.models import EmailAddress
from django.db import transaction

from aisaas.users.models import User


@transaction.atomic
def user_create_verified(*, email: str, password: str, name: str = "") -> User:
    """Create (or reset the password of) a user whose email address is already verified.

    Used for the demo login and by tests; sign-ups go through allauth's verification flow instead.
    """
    user, _ = User.objects.get_or_create(email=email, defaults={"name": name})
    user.set_password(password)
    user.save(update_fields=["password"])
    EmailAddress.objects.update_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
    return user

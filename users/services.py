import hashlib
import secrets
from datetime import timedelta

from allauth.account.models import EmailAddress
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound
from core.text import text_checked
from users.models import ApiKey, User


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


MAX_ACTIVE_API_KEYS = 20
# Writing last_used_at on every API call would add a write to each one; once a minute is enough to show it.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


class KeyAlreadyCreated(Conflict):
    code = "key_already_created"
    default_message = (
        "That form was sent before and its key was created then. A key is shown only once: if you did not copy "
        "it, revoke it and create another."
    )


def api_key_form_token() -> str:
    """A token for one API key form: api_key_create makes one key per token, so sending the form again (a reload
    of the page that showed the key) creates no second key."""
    return secrets.token_urlsafe(24)


@transaction.atomic
def api_key_create(*, user: User, name: str, form_token: str | None = None) -> tuple[ApiKey, str]:
    """A new key for the user; returns it and the key itself, which is never stored and never shown again.
    `form_token` (api_key_form_token): a key was made with it already, KeyAlreadyCreated."""
    if form_token is not None and len(form_token) > ApiKey._meta.get_field("form_token").max_length:
        raise InvalidInput("The form is out of date: reload the page.", field="form_token")
    # Before the other checks, so a form sent again is told so even at the key limit; the unique token below
    # settles the same form sent twice at once.
    if form_token and ApiKey.objects.filter(form_token=form_token).exists():
        raise KeyAlreadyCreated()
    name = (name if isinstance(name, str) else "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("Give the key a name (up to 100 characters).", field="name")
    text_checked(name, field="name", what="The name")
    if ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_ACTIVE_API_KEYS:
        raise InvalidInput(f"You have {MAX_ACTIVE_API_KEYS} active keys: revoke one first.", field="name")
    raw_key = ApiKey.PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():  # a savepoint: the same form sent twice at once, the second loses here
            key = ApiKey.objects.create(
                user=user,
                name=name,
                prefix=raw_key[: len(ApiKey.PREFIX) + 6],
                key_hash=api_key_hash(raw_key),
                form_token=form_token or None,
            )
    except IntegrityError:
        if form_token and ApiKey.objects.filter(form_token=form_token).exists():
            raise KeyAlreadyCreated() from None
        raise
    return key, raw_key


def api_key_revoke(*, user: User, key_id: int) -> ApiKey:
    """Revoke one of the user's keys; it stops working at once. Another user's key: not_found."""
    key = ApiKey.objects.filter(pk=key_id, user=user).first()
    if key is None:
        raise NotFound("That key does not exist.")
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key


def bearer_token(authorization: str) -> str:
    """The token of an 'Authorization: Bearer <token>' header, or ''."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def api_key_plausible(raw_key: str) -> bool:
    """Whether `raw_key` looks like one of our keys at all (anything else needs no lookup)."""
    return bool(raw_key) and raw_key.startswith(ApiKey.PREFIX) and len(raw_key) <= 200


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key` (with its user), or None."""
    if not api_key_plausible(raw_key):
        return None
    key = (
        ApiKey.objects.select_related("user")
        .filter(key_hash=api_key_hash(raw_key), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if key is not None:
        api_key_used(key_id=key.pk, last_used_at=key.last_used_at)
    return key


def api_key_use_unrecorded(last_used_at) -> bool:
    """Whether a use of a key last recorded at `last_used_at` is to be recorded (LAST_USED_RESOLUTION)."""
    return last_used_at is None or timezone.now() - last_used_at > LAST_USED_RESOLUTION


def api_key_used(*, key_id: int, last_used_at) -> None:
    """Record that a key was just used, if what is recorded is older than LAST_USED_RESOLUTION."""
    if api_key_use_unrecorded(last_used_at):
        ApiKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())

"""The operator commands: what people who run the product (and their scripts) do without `manage.py shell`."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.factories import UserFactory
from tests.usage.conftest import make_plan
from usage.models import AccountAction, QuotaPeriod
from usage.selectors import plan_for
from users.models import ApiKey, User
from users.services import api_key_authenticate

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def staff():
    return UserFactory(is_staff=True)


def test_a_created_user_can_sign_in_at_once(client):
    assert "Created user" in run("user_create", "new@example.com", "--password", "a-long-password", "--name", "New")

    user = User.objects.get(email="new@example.com")
    assert user.name == "New" and user.emailaddress_set.get().verified
    assert client.login(email="new@example.com", password="a-long-password")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["user@example.com", "--password", "short"], "at least 8 characters"),
        (["not-an-address", "--password", "a-long-password"], "is not an e-mail address"),
    ],
)
def test_a_user_is_not_created_from_bad_input(arguments, message):
    with pytest.raises(CommandError, match=message):
        run("user_create", *arguments)
    assert not User.objects.exists()


def test_a_user_is_not_created_twice(user):
    with pytest.raises(CommandError, match="exists already"):
        run("user_create", user.email.upper(), "--password", "a-long-password")


def test_an_api_key_is_printed_once_works_and_stops_when_revoked(user):
    raw_key = run("api_key_create", user.email, "--name", "ci").strip()

    key = api_key_authenticate(raw_key)
    assert key is not None and key.user == user and key.name == "ci"
    assert ApiKey.objects.get().key_hash != raw_key  # only its hash is kept

    assert "is revoked" in run("api_key_revoke", user.email, "--prefix", key.prefix)
    assert api_key_authenticate(raw_key) is None


def test_another_users_key_cannot_be_revoked_through_someone_else(user, other_user):
    raw_key = run("api_key_create", other_user.email, "--name", "theirs").strip()
    key = ApiKey.objects.get()

    with pytest.raises(CommandError, match="does not exist"):
        run("api_key_revoke", user.email, "--id", str(key.pk))
    assert api_key_authenticate(raw_key) is not None


def test_setting_a_plan_is_audited(user, staff):
    make_plan(slug="team")

    assert "is on the plan team" in run("plan_set", user.email, "team", "--actor", staff.email, "--reason", "Sales")

    assert plan_for(user=user).slug == "team"
    action = AccountAction.objects.get()
    assert (action.actor, action.user, action.reason, action.kind) == (staff, user, "Sales", "plan_change")


def test_a_plan_is_set_only_by_staff_to_a_plan_that_exists(user, other_user, staff):
    make_plan(slug="team")
    with pytest.raises(CommandError, match=r"No plan 'nope'\. Plans: .*team"):
        run("plan_set", user.email, "nope", "--actor", staff.email, "--reason", "x")
    with pytest.raises(CommandError, match="is not staff"):
        run("plan_set", user.email, "team", "--actor", other_user.email, "--reason", "x")
    with pytest.raises(CommandError, match="No user has the address"):
        run("plan_set", "ghost@example.com", "team", "--actor", staff.email, "--reason", "x")
    assert plan_for(user=user).slug == "free" and not AccountAction.objects.exists()


def test_bonus_tokens_are_granted_audited_and_shown(user, staff):
    run("bonus_tokens_grant", user.email, "5000", "--actor", staff.email, "--reason", "Apology")
    with pytest.raises(CommandError, match="positive whole number"):
        run("bonus_tokens_grant", user.email, "-5", "--actor", staff.email, "--reason", "Oops")
    with pytest.raises(CommandError, match="Say why"):
        run("bonus_tokens_grant", user.email, "5", "--actor", staff.email, "--reason", " ")

    summary = json.loads(run("usage_show", user.email))

    period = QuotaPeriod.objects.get(user=user)
    assert summary["period"]["bonus_tokens"] == 5000 and summary["period"]["allowance"] == period.allowance
    assert AccountAction.objects.get().detail["tokens"] == 5000


def test_usage_is_shown_as_json(user):
    QuotaPeriod.objects.filter(user=user).delete()
    run("api_key_create", user.email, "--name", "scripts")

    summary = json.loads(run("usage_show", user.email))

    assert summary["user"] == {"id": user.pk, "email": user.email, "active": True, "suspended": False}
    assert summary["plan"]["slug"] == "free"
    assert summary["period"]["used"] == 0 and summary["period"]["remaining"] == summary["period"]["allowance"] > 0
    (key,) = summary["api_keys"]
    assert key["name"] == "scripts" and key["revoked"] is False and key["prefix"].startswith("sk-")
    assert not QuotaPeriod.objects.filter(user=user).exists()  # showing writes nothing

"""API keys: created and shown once, stored only as a hash, listed with last use, revoked at once."""

import re

import pytest
from django.urls import reverse

from tests.factories import UserFactory
from tests.usage.conftest import race
from users import services
from users.models import ApiKey

pytestmark = pytest.mark.django_db


def test_a_new_key_is_shown_once_and_only_its_hash_and_prefix_are_stored(client, user):
    client.force_login(user)

    response = client.post(reverse("api_keys"), {"name": "laptop"})

    raw = re.search(r'<code id="new-key">(sk-ais-[^<]+)</code>', response.content.decode()).group(1)
    key = ApiKey.objects.get(user=user)
    assert key.name == "laptop" and raw.startswith(key.prefix) and len(raw) > 40
    assert raw not in str(ApiKey.objects.values().get()) and key.key_hash == services.api_key_hash(raw)
    assert response["Cache-Control"] == "no-store"
    assert raw not in client.get(reverse("api_keys")).content.decode()  # never again
    assert services.api_key_authenticate(raw).user == user


def test_the_same_form_sent_again_creates_no_second_key_and_shows_none(client, user):
    client.force_login(user)
    page = client.get(reverse("api_keys")).content.decode()
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)

    first = client.post(reverse("api_keys"), {"name": "laptop", "form_token": token}).content.decode()
    again = client.post(reverse("api_keys"), {"name": "laptop", "form_token": token}, follow=True)

    raw = re.search(r'<code id="new-key">(sk-ais-[^<]+)</code>', first).group(1)
    assert ApiKey.objects.filter(user=user).count() == 1
    assert 'id="new-key"' not in again.content.decode() and raw not in again.content.decode()
    assert "shown only once" in again.content.decode() and "revoke it and create another" in again.content.decode()
    # The page that showed the key has a fresh token: its form makes the next key.
    fresh = re.search(r'name="form_token" value="([^"]+)"', first).group(1)
    assert fresh != token
    client.post(reverse("api_keys"), {"name": "ci", "form_token": fresh})
    assert ApiKey.objects.filter(user=user).count() == 2


def test_an_overlong_form_token_is_refused_clearly(client, user):
    client.force_login(user)
    response = client.post(reverse("api_keys"), {"name": "laptop", "form_token": "x" * 65}, follow=True)
    assert response.status_code == 200 and "reload the page" in response.content.decode()
    assert not ApiKey.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_same_form_sent_many_times_at_once_creates_one_key():
    user = UserFactory()
    token, senders = services.api_key_form_token(), 8

    def send() -> str:
        try:
            services.api_key_create(user=user, name="double click", form_token=token)
            return "created"
        except services.KeyAlreadyCreated:
            return "already created"

    outcomes = race(senders, send)

    assert sorted(outcomes) == ["already created"] * (senders - 1) + ["created"]
    assert ApiKey.objects.filter(user=user).count() == 1


def test_last_use_is_recorded_and_shown(client, user):
    key, raw = services.api_key_create(user=user, name="ci")
    services.api_key_authenticate(raw)
    client.force_login(user)

    key.refresh_from_db()
    assert key.last_used_at is not None
    assert "never" not in client.get(reverse("api_keys")).content.decode()


def test_a_revoked_key_stops_working_at_once(client, user):
    key, raw = services.api_key_create(user=user, name="old")
    client.force_login(user)

    response = client.post(reverse("api_key_revoke", args=[key.pk]), follow=True)

    assert "revoked" in response.content.decode()
    assert services.api_key_authenticate(raw) is None


def test_someone_elses_key_cannot_be_revoked_and_is_not_listed(client, user, other_user):
    theirs, raw = services.api_key_create(user=other_user, name="theirs")
    client.force_login(user)

    page = client.get(reverse("api_keys")).content.decode()
    response = client.post(reverse("api_key_revoke", args=[theirs.pk]), follow=True)

    assert "theirs" not in page
    assert "does not exist" in response.content.decode()
    assert services.api_key_authenticate(raw).user == other_user


@pytest.mark.parametrize("raw", ["", "sk-ais-wrong", "sk-other-prefix", "x" * 500])
def test_unknown_keys_do_not_authenticate(raw, user):
    services.api_key_create(user=user, name="real")
    assert services.api_key_authenticate(raw) is None


def test_a_key_needs_a_name_and_a_user_has_at_most_twenty(client, user):
    client.force_login(user)
    assert "Give the key a name" in client.post(reverse("api_keys"), {"name": "  "}, follow=True).content.decode()
    for number in range(services.MAX_ACTIVE_API_KEYS):
        services.api_key_create(user=user, name=f"k{number}")

    response = client.post(reverse("api_keys"), {"name": "one too many"}, follow=True)

    assert "revoke one first" in response.content.decode()
    assert ApiKey.objects.filter(user=user).count() == services.MAX_ACTIVE_API_KEYS


def test_the_page_needs_a_login(client):
    assert client.get(reverse("api_keys")).status_code == 302

"""The REST API: a user's conversations, messages and usage, by session or API key; never another user's
(I7); the OpenAPI schema and its docs page."""

import pytest
from django.urls import reverse

from chat.models import Conversation
from tests.factories import ConversationFactory, MessageFactory
from users import services as user_services

pytestmark = pytest.mark.django_db


def bearer(raw_key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"}


@pytest.fixture
def mine(user):
    conversation = ConversationFactory(user=user, title="Mine")
    MessageFactory(conversation=conversation, content="question")
    MessageFactory(conversation=conversation, role="assistant", content="answer")
    return conversation


@pytest.fixture
def theirs(other_user):
    conversation = ConversationFactory(user=other_user, title="Theirs")
    MessageFactory(conversation=conversation, content="their secret")
    return conversation


def test_an_api_key_lists_reads_and_deletes_its_owners_conversations(client, user, mine, theirs):
    _, raw = user_services.api_key_create(user=user, name="script")

    listed = client.get("/api/conversations/", **bearer(raw)).json()
    detail = client.get(f"/api/conversations/{mine.pk}/", **bearer(raw)).json()
    messages = client.get(f"/api/conversations/{mine.pk}/messages/", **bearer(raw)).json()

    assert [c["title"] for c in listed["results"]] == ["Mine"] and listed["count"] == 1
    assert [m["content"] for m in detail["messages"]] == ["question", "answer"]
    assert [m["role"] for m in messages["results"]] == ["user", "assistant"]
    assert client.delete(f"/api/conversations/{mine.pk}/", **bearer(raw)).status_code == 204
    assert not Conversation.objects.filter(pk=mine.pk).exists()


def test_one_users_key_can_never_read_or_delete_another_users_conversations(client, user, theirs):
    _, raw = user_services.api_key_create(user=user, name="script")

    for response in (
        client.get(f"/api/conversations/{theirs.pk}/", **bearer(raw)),
        client.get(f"/api/conversations/{theirs.pk}/messages/", **bearer(raw)),
        client.delete(f"/api/conversations/{theirs.pk}/", **bearer(raw)),
        client.get("/api/conversations/999999/", **bearer(raw)),
    ):
        assert response.status_code == 404 and "their secret" not in response.content.decode()
    assert Conversation.objects.filter(pk=theirs.pk).exists()


def test_the_session_works_too_and_the_usage_endpoint_shows_the_period(client, user, mine):
    client.force_login(user)

    assert client.get("/api/conversations/").json()["count"] == 1
    usage = client.get(reverse("api_usage")).json()

    assert usage["plan"] == "free" and usage["allowance"] == 200_000 and usage["used"] == 0
    assert usage["level"] == "ok" and usage["period_end"]


@pytest.mark.parametrize("headers", [{}, {"HTTP_AUTHORIZATION": "Bearer sk-ais-wrong"}])
def test_no_or_a_bad_key_is_refused(client, mine, headers):
    response = client.get("/api/conversations/", **headers)
    assert response.status_code in (401, 403) and "Mine" not in response.content.decode()


def test_a_revoked_key_is_refused_at_once(client, user, mine):
    key, raw = user_services.api_key_create(user=user, name="old")
    user_services.api_key_revoke(user=user, key_id=key.pk)

    assert client.get("/api/conversations/", **bearer(raw)).status_code == 401


def test_the_openapi_schema_and_its_docs_page(client, user):
    client.force_login(user)

    schema = client.get(reverse("api_schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    docs = client.get(reverse("api_docs")).content.decode()

    assert schema["openapi"].startswith("3.") and "/api/conversations/{id}/messages/" in schema["paths"]
    assert "apiKey" in schema["components"]["securitySchemes"]
    assert "swagger-ui" in docs and "cdn" not in docs.lower()

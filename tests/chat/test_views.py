"""The chat page and the conversation endpoints over HTTP."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone

from chat import selectors
from chat.models import Conversation
from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


def test_chat_page_requires_login(client):
    response = client.get(reverse("chat:new"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_chat_page_lists_only_my_conversations_newest_first(client, user, other_user):
    older = ConversationFactory(user=user, title="Older")
    newer = ConversationFactory(user=user, title="Newer")
    Conversation.objects.filter(pk=older.pk).update(updated_at=newer.updated_at.replace(year=2020))
    ConversationFactory(user=other_user, title="Not yours")
    client.force_login(user)

    response = client.get(reverse("chat:new"))
    html = response.content.decode()
    assert response.status_code == 200
    assert html.index("Newer") < html.index("Older")
    assert "Not yours" not in html
    assert [c["id"] for c in response.context["conversations"]] == [newer.pk, older.pk]


def test_the_sidebar_lists_the_most_recent_conversations_and_offers_the_older_ones(client, user, monkeypatch):
    monkeypatch.setattr(selectors, "SIDEBAR_CONVERSATIONS", 3)
    conversations = [ConversationFactory(user=user, title=f"Chat {n}") for n in range(4)]
    client.force_login(user)

    response = client.get(reverse("chat:new"))
    assert [c["id"] for c in response.context["conversations"]] == [c.pk for c in reversed(conversations[1:])]
    assert 'id="older-conversations"' in response.content.decode()

    Conversation.objects.filter(pk=conversations[0].pk).delete()
    assert 'id="older-conversations"' not in client.get(reverse("chat:new")).content.decode()


def test_chat_page_query_count_does_not_grow_with_history(client, user, django_assert_max_num_queries):
    conversation = ConversationFactory(user=user)
    client.force_login(user)
    for _ in range(3):
        MessageFactory(conversation=conversation)
        ConversationFactory(user=user)
    with django_assert_max_num_queries(8):
        small = client.get(reverse("chat:conversation", args=[conversation.pk]))
    for _ in range(30):
        MessageFactory(conversation=conversation)
        ConversationFactory(user=user)
    with django_assert_max_num_queries(8):
        large = client.get(reverse("chat:conversation", args=[conversation.pk]))
    assert small.status_code == large.status_code == 200
    assert len(large.context["chat_config"]["messages"]) == 33


def test_history_is_rendered_as_data_not_html(client, user):
    conversation = ConversationFactory(user=user)
    MessageFactory(conversation=conversation, content="<script>alert(1)</script>")
    client.force_login(user)
    html = client.get(reverse("chat:conversation", args=[conversation.pk])).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "\\u003Cscript\\u003Ealert(1)\\u003C/script\\u003E" in html


def test_someone_elses_conversation_page_is_404_like_a_missing_one(client, user, other_user):
    theirs = ConversationFactory(user=other_user)
    client.force_login(user)
    assert client.get(reverse("chat:conversation", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("chat:conversation", args=[theirs.pk + 999])).status_code == 404


def conversation_url(conversation) -> str:
    return f"/api/conversations/{conversation.pk}/"


def test_rename_and_delete_my_conversation(client, user):
    conversation = ConversationFactory(user=user, title="Old")
    client.force_login(user)
    response = client.patch(conversation_url(conversation), {"title": "  New title "}, content_type="application/json")
    assert response.json()["title"] == "New title" and response.json()["id"] == conversation.pk
    conversation.refresh_from_db()
    assert conversation.title == "New title"

    assert client.delete(conversation_url(conversation)).status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_someone_elses_conversation_cannot_be_changed(client, user, other_user, method):
    theirs = ConversationFactory(user=other_user, title="Theirs")
    client.force_login(user)
    response = getattr(client, method)(conversation_url(theirs), {"title": "Mine now"}, content_type="application/json")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Conversation not found."}}
    theirs.refresh_from_db()
    assert theirs.title == "Theirs"


@pytest.mark.parametrize(
    ("body", "message"),
    [("{not json", "not valid JSON"), ("[]", "JSON object"), ('{"title": ""}', "empty"), ('{"title": 5}', "empty")],
)
def test_bad_rename_bodies_get_a_clear_400(client, user, body, message):
    conversation = ConversationFactory(user=user)
    client.force_login(user)
    response = client.patch(conversation_url(conversation), body, content_type="application/json")
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_conversation_endpoints_need_login_and_csrf(client, user):
    conversation = ConversationFactory(user=user)
    url = conversation_url(conversation)
    response = client.delete(url)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
    csrf_client = type(client)(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    response = csrf_client.delete(url)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_chat_javascript_is_loaded_only_on_the_chat_page(client, user):
    assert "chat/chat.js" not in client.get("/").content.decode()
    client.force_login(user)
    assert "chat/chat.js" in client.get(reverse("chat:new")).content.decode()
    assert "chat/chat.js" not in client.get("/").content.decode()


def test_pages_send_a_strict_content_security_policy(client, user):
    client.force_login(user)
    policy = client.get(reverse("chat:new"))["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_landing_page_explains_and_links(client):
    html = client.get("/").content.decode()
    assert reverse("account_signup") in html and reverse("account_login") in html
    assert "demo" in html.lower()


def test_pages_and_the_browsers_default_address_give_the_site_icon(client):
    icon_url = static("favicon.svg")
    assert f'<link rel="icon" href="{icon_url}" type="image/svg+xml">' in client.get("/").content.decode()
    response = client.get("/favicon.ico")  # what a browser asks for on a page that names no icon (the admin)
    assert response.status_code == 302 and response["Location"] == icon_url
    svg = Path(finders.find("favicon.svg")).read_text()
    assert svg.startswith("<svg") and 'viewBox="0 0 32 32"' in svg


def test_no_secret_reaches_a_page(client, user, settings):
    settings.LLM_API_KEY = "sk-very-secret-key-123"
    client.force_login(user)
    for url in ("/", reverse("chat:new")):
        html = client.get(url).content.decode()
        assert settings.LLM_API_KEY not in html and settings.SECRET_KEY not in html


def test_a_conversation_downloads_as_markdown_with_who_wrote_what_and_when(client, user):
    conversation = ConversationFactory(user=user, title="Café plans: v2")
    asked = timezone.now().replace(year=2026, month=11, day=3, hour=9, minute=5, second=0, microsecond=0)
    MessageFactory(conversation=conversation, content="Is **this** kept as typed?", created_at=asked)
    MessageFactory(
        conversation=conversation, role="assistant", model="demo-mini", content="Yes:\n\n```py\nx = 1\n```\n",
        created_at=asked + timedelta(seconds=2),
    )  # fmt: skip
    MessageFactory(conversation=conversation, role="assistant", model="demo-mini", content="Half an", status="stopped")
    MessageFactory(conversation=conversation, content="secret", content_purged_at=timezone.now())
    client.force_login(user)

    response = client.get(reverse("chat:export", args=[conversation.pk]))

    assert response.status_code == 200 and response["Content-Type"] == "text/markdown; charset=utf-8"
    # The title as the file's name, in RFC 6266's form for a name that is not ASCII.
    assert response["Content-Disposition"] == "attachment; filename*=utf-8''caf%C3%A9-plans-v2.md"
    text = response.content.decode()
    assert text.startswith("# Café plans: v2\n\nExported from aisaas on ")
    assert "## You · 2026-11-03 09:05 UTC\n\nIs **this** kept as typed?\n\n" in text
    assert "## Assistant (demo-mini) · 2026-11-03 09:05 UTC\n\nYes:\n\n```py\nx = 1\n```\n\n" in text
    assert "Half an\n\n_(Stopped: the answer is incomplete.)_" in text
    assert "secret" not in text and "_This text was erased after the retention period._" in text
    assert text.index("kept as typed") < text.index("Half an") < text.index("erased")


def test_only_the_owner_can_download_a_conversation(client, user, other_user):
    conversation = ConversationFactory(user=other_user, title="Theirs")
    MessageFactory(conversation=conversation, content="private words")
    url = reverse("chat:export", args=[conversation.pk])

    assert client.get(url).status_code == 302  # to sign in
    client.force_login(user)
    for response in (client.get(url), client.get(reverse("chat:export", args=[999_999]))):
        assert response.status_code == 404 and "private words" not in response.content.decode()

"""Hostile input to the REST API, the pages' JSON calls and the websocket: a clear 4xx (or error frame), never a
500, and nothing paid before the refusal."""

import json

import pytest

from chat.models import Conversation, Feedback, Message
from tests.factories import ConversationFactory, MessageFactory
from users.models import ApiKey
from users.services import api_key_create

pytestmark = pytest.mark.django_db

NUL, SURROGATE = "a NUL \x00 here", "a lone \ud800 surrogate"
NESTED = "[" * 100_000 + "]" * 100_000


def body(value) -> str:
    """JSON as a client may send it, lone surrogates included (json.dumps escapes them)."""
    return json.dumps(value)


@pytest.mark.parametrize("title", [NUL, SURROGATE])
def test_a_title_that_cannot_be_stored_is_refused(client, user, title):
    conversation = ConversationFactory(user=user, title="Kept")
    client.force_login(user)

    response = client.patch(f"/api/conversations/{conversation.pk}/", body({"title": title}),
                            content_type="application/json")  # fmt: skip

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_text"
    conversation.refresh_from_db()
    assert conversation.title == "Kept"


def test_json_nested_without_end_is_refused_everywhere(client, user):
    conversation = ConversationFactory(user=user)
    answer = MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT)
    client.force_login(user)

    for response in (
        client.patch(f"/api/conversations/{conversation.pk}/", NESTED, content_type="application/json"),
        client.post(f"/api/messages/{answer.pk}/feedback/", NESTED, content_type="application/json"),
        client.patch(
            f"/api/conversations/{conversation.pk}/",
            body({"title": json.loads("[" * 50 + "]" * 50)}),
            content_type="application/json",
        ),
    ):
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] in ("invalid_json", "invalid")


@pytest.mark.parametrize("comment", [NUL, SURROGATE])
def test_a_feedback_comment_that_cannot_be_stored_is_refused(client, user, comment):
    answer = MessageFactory(conversation__user=user, role=Message.Role.ASSISTANT)
    client.force_login(user)

    response = client.post(f"/api/messages/{answer.pk}/feedback/", body({"rating": 1, "comment": comment}),
                           content_type="application/json")  # fmt: skip

    assert response.status_code == 400 and not Feedback.objects.exists()


@pytest.mark.parametrize("name", [NUL, SURROGATE, {"nested": ["name"]}])
def test_an_api_key_name_that_cannot_be_stored_is_refused(client, user, name):
    from core.errors import InvalidInput

    with pytest.raises(InvalidInput):
        api_key_create(user=user, name=name)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("query", ["limit=9223372036854775808", "offset=9223372036854775808"])
def test_paging_past_any_table_is_answered_not_a_500(client, user, query):
    ConversationFactory(user=user)
    client.force_login(user)

    response = client.get(f"/api/conversations/?{query}")

    assert response.status_code == 200 and "results" in response.json()


@pytest.mark.parametrize("query", ["limit=10&offset=-5", "limit=abc", "limit=0", "offset=null", "limit=\uff11"])
def test_paging_that_is_not_a_whole_number_in_range_is_a_400_naming_it(client, user, query):
    client.force_login(user)

    response = client.get(f"/api/conversations/?{query}")

    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "invalid"
    assert error["field"] in query and "whole number" in error["message"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("content", [NUL, SURROGATE])
async def test_a_message_that_cannot_be_stored_is_refused_before_the_provider_is_called(chat_socket, content,
                                                                                         monkeypatch):  # fmt: skip
    from chat import services

    calls = []
    monkeypatch.setattr(services, "reply_open", lambda plan: calls.append(plan))

    await chat_socket.send(json.dumps({"type": "message", "conversation": None, "content": content}))
    error = await chat_socket.receive()

    assert error["type"] == "error" and error["code"] == "invalid_text" and calls == []
    assert not await Conversation.objects.aexists()

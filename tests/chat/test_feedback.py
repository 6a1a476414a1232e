"""Feedback on answers: thumbs up/down with an optional comment, only on one's own finished answers."""

import json

import pytest
from django.urls import reverse

from chat.models import Feedback, Message
from tests.factories import MessageFactory

pytestmark = pytest.mark.django_db


def rate(client, message_id, **body):
    return client.post(reverse("api_feedback", args=[message_id]), json.dumps(body), content_type="application/json")


@pytest.fixture
def answer(user):
    return MessageFactory(conversation__user=user, role=Message.Role.ASSISTANT, model="demo-mini")


def test_a_rating_is_saved_changed_and_taken_back(client, user, answer):
    client.force_login(user)

    assert rate(client, answer.pk, rating=1).json() == {"message": answer.pk, "rating": 1}
    assert rate(client, answer.pk, rating=-1, comment="  Wrong year  ").json()["rating"] == -1
    feedback = Feedback.objects.get()
    assert (feedback.rating, feedback.comment, feedback.user) == (-1, "Wrong year", user)

    assert rate(client, answer.pk, rating=0).json()["rating"] == 0
    assert not Feedback.objects.exists()


def test_the_chat_page_carries_each_answers_rating(client, user, answer):
    Feedback.objects.create(message=answer, user=user, rating=1)
    client.force_login(user)

    config = client.get(reverse("chat:conversation", args=[answer.conversation_id])).context["chat_config"]

    assert [m["rating"] for m in config["messages"]] == [1]


@pytest.mark.parametrize(
    "body",
    [
        {"rating": 2},
        {"rating": "1"},
        {"rating": True},
        {},
        {"rating": 1, "comment": 5},
        {"rating": 1, "comment": "x" * 2001},
    ],
)
def test_bad_ratings_get_a_clear_error(client, user, answer, body):
    client.force_login(user)

    response = rate(client, answer.pk, **body)

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert not Feedback.objects.exists()


def test_someone_elses_answer_a_question_or_a_missing_one_is_not_found(client, user, other_user, answer):
    theirs = MessageFactory(conversation__user=other_user, role=Message.Role.ASSISTANT)
    question = MessageFactory(conversation=answer.conversation, role=Message.Role.USER)
    streaming = MessageFactory(conversation=answer.conversation, role=Message.Role.ASSISTANT, status="streaming")
    client.force_login(user)

    for message_id in (theirs.pk, question.pk, streaming.pk, 999_999):
        response = rate(client, message_id, rating=1)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert not Feedback.objects.exists()


def test_rating_needs_a_login_and_a_post(client, answer):
    assert rate(client, answer.pk, rating=1).status_code in (401, 403)
    client.force_login(answer.conversation.user)
    assert client.get(reverse("api_feedback", args=[answer.pk])).status_code == 405

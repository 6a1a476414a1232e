"""Staff audit conversations and messages in the admin: searchable, read-only, staff only."""

import pytest
from django.urls import reverse

from chat.models import Conversation, Feedback, Message
from tests.factories import MessageFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser():
    return UserFactory(is_staff=True, is_superuser=True)


def test_staff_find_a_message_by_its_text_and_cannot_change_it(client, superuser, user):
    message = MessageFactory(conversation__user=user, content="the secret recipe for scones")
    MessageFactory(conversation__user=user, content="something else")
    client.force_login(superuser)

    found = client.get(reverse("admin:chat_message_changelist"), {"q": "scones"})
    change = client.post(reverse("admin:chat_message_change", args=[message.pk]), {"content": "edited"})

    assert list(found.context["cl"].result_list) == [message]
    assert change.status_code == 403 and Message.objects.get(pk=message.pk).content == "the secret recipe for scones"
    assert client.get(reverse("admin:chat_message_change", args=[message.pk])).status_code == 200  # view only
    assert (
        client.post(
            reverse("admin:chat_conversation_delete", args=[message.conversation_id]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert Conversation.objects.exists()


def test_staff_find_conversations_by_user_and_users_see_no_admin(client, superuser, user):
    MessageFactory(conversation__user=user, conversation__title="Trip planning")
    client.force_login(user)
    assert client.get(reverse("admin:chat_conversation_changelist")).status_code == 302

    client.force_login(superuser)
    response = client.get(reverse("admin:chat_conversation_changelist"), {"q": user.email})
    assert [c.title for c in response.context["cl"].result_list] == ["Trip planning"]


def test_feedback_is_listed_for_staff(client, superuser, user):
    message = MessageFactory(conversation__user=user, role=Message.Role.ASSISTANT)
    Feedback.objects.create(message=message, user=user, rating=-1, comment="off topic")
    client.force_login(superuser)

    page = client.get(reverse("admin:chat_feedback_changelist")).content.decode()

    assert "off topic" in page

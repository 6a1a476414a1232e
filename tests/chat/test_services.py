from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from chat.models import Message
from chat.services import stale_streams_expire, system_prompt_for, title_from, turn_finish_statement
from chat.tasks import expire_stale_streams
from tests.factories import MessageFactory

pytestmark = pytest.mark.django_db


def test_title_is_the_first_line_shortened():
    assert title_from("\n  How do I cook rice?\nIn detail please") == "How do I cook rice?"
    long_title = title_from("word " * 100)
    assert len(long_title) == 80 and long_title.endswith("…")


def test_system_prompt_carries_the_users_context(settings, user):
    settings.LLM_SYSTEM_PROMPT = "Helping {user_name} on {today}. {unknown} stays."
    prompt = system_prompt_for(user)
    assert user.display_name in prompt and timezone.now().date().isoformat() in prompt
    assert "{unknown} stays." in prompt


def turn_finish(**reply) -> None:
    """The answer's UPDATE on its own, as the settlement runs it with the accounting (usage.services.usage_settle)."""
    with connection.cursor() as cursor:
        cursor.execute(*turn_finish_statement(**reply))


def test_a_reply_is_settled_once():
    reply = MessageFactory(role="assistant", status="streaming", content="")
    settle = dict(model="demo-mini", prompt_tokens=5, error_code="", time_to_first_token_ms=3, duration_ms=9)
    turn_finish(message_id=reply.pk, content="first", status="complete", completion_tokens=1, **settle)
    turn_finish(message_id=reply.pk, content="second", status="stopped", completion_tokens=2, **settle)
    reply.refresh_from_db()
    assert (reply.content, reply.status, reply.completion_tokens) == ("first", "complete", 1)


def test_stale_streams_are_closed_by_the_beat_task_idempotently(settings):
    settings.CHAT_STALE_STREAM_MINUTES = 15
    stale = MessageFactory(role="assistant", status="streaming")
    Message.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=16))
    fresh = MessageFactory(role="assistant", status="streaming")

    assert expire_stale_streams.apply().get() == 1
    assert expire_stale_streams.apply().get() == 0
    assert stale_streams_expire() == 0
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.status, stale.error_code) == ("error", "interrupted")
    assert fresh.status == "streaming"


def test_the_sweep_is_scheduled_in_beat(settings):
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "chat.tasks.expire_stale_streams" in schedule

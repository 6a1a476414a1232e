"""The chat consumer through the real ASGI stack, streaming from the dev LLM over HTTP."""

import asyncio
import time

import pytest

from chat import services
from chat.models import Conversation, Message
from chat.protocol import CloseCode
from core.db import in_db_thread as database_sync_to_async
from llm.devllm.behaviour import answer_tokens
from tests.chat.conftest import delta_text, open_socket, saved
from tests.factories import ConversationFactory, MessageFactory
from usage.models import QuotaPeriod, UsageRecord
from usage.tokens import token_count

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "[devllm tokens=400 interval_ms=10]"


def expected_answer(content: str, length: int = 12) -> str:
    return "".join(answer_tokens([{"role": "user", "content": content}], length=length))


@database_sync_to_async
def get_message(pk) -> Message:
    return Message.objects.get(pk=pk)


@database_sync_to_async
def usage_of(reply: Message) -> tuple[UsageRecord, QuotaPeriod]:
    """The one usage record of a reply, and its user's quota period."""
    record = UsageRecord.objects.get(message=reply)
    return record, QuotaPeriod.objects.get(user_id=record.user_id)


async def test_anonymous_socket_is_closed_with_4401():
    socket, connected, _ = await open_socket(user=None)
    assert connected  # accepted, then closed with a code the browser can act on
    assert await socket.communicator.receive_output(timeout=2) == {
        "type": "websocket.close",
        "code": CloseCode.UNAUTHENTICATED,
    }


async def test_cross_origin_socket_is_refused(user):
    _, connected, _ = await open_socket(user, origin=b"http://evil.example")
    assert not connected


async def test_message_streams_in_order_and_is_persisted(chat_socket, user):
    frames = await chat_socket.ask("Hello **world**")

    start, *middle, end = frames
    assert start == {"type": "start", "conversation": None, "model": "demo-mini", "cached": False}
    ids = saved(frames)
    assert ids["conversation"]["created"] is True and ids["conversation"]["title"] == "Hello **world**"
    assert {frame["type"] for frame in middle} == {"delta", "saved"}
    assert delta_text(frames) == expected_answer("Hello **world**")
    assert end == {
        "type": "end",
        "message": ids["message"],
        "status": "complete",
        "model": "demo-mini",
        "usage": {"prompt_tokens": end["usage"]["prompt_tokens"], "completion_tokens": 12},
        "quota": {
            "used": end["usage"]["prompt_tokens"] + 12,
            "reserved": 0,
            "allowance": 200_000,
            "remaining": 200_000 - end["usage"]["prompt_tokens"] - 12,
            "reset_at": end["quota"]["reset_at"],
            "level": "ok",
        },
    }

    reply = await get_message(ids["message"])
    assert (reply.status, reply.content, reply.completion_tokens) == ("complete", delta_text(frames), 12)
    assert reply.prompt_tokens > 0 and reply.time_to_first_token_ms is not None and reply.finished_at
    question = await get_message(ids["user_message"])
    assert (question.role, question.content, question.conversation_id) == (
        "user",
        "Hello **world**",
        reply.conversation_id,
    )


async def test_follow_up_goes_to_the_same_conversation_with_history(chat_socket):
    first = await chat_socket.ask("First question")
    conversation_id = saved(first)["conversation"]["id"]
    second = await chat_socket.ask("Second question", conversation=conversation_id, model="demo-large")

    assert second[0] == {"type": "start", "conversation": conversation_id, "model": "demo-large", "cached": False}
    assert saved(second)["conversation"] == {"id": conversation_id, "title": "First question", "created": False}
    assert second[-1]["model"] == "demo-large"
    assert delta_text(second) == expected_answer("Second question")
    # The provider saw the whole history: system prompt, 1st question, 1st answer, 2nd question.
    history_tokens = second[-1]["usage"]["prompt_tokens"]
    assert history_tokens > first[-1]["usage"]["prompt_tokens"]


async def test_stop_cancels_delivery_and_saves_the_partial_answer(chat_socket):
    await chat_socket.send({"type": "message", "conversation": None, "content": f"Tell me a lot {SLOW}"})
    frames = [await chat_socket.receive()]
    while frames[-1]["type"] != "delta":
        frames.append(await chat_socket.receive())
    await chat_socket.send({"type": "stop"})
    frames += await chat_socket.receive_until("end")

    end = frames[-1]
    assert end["status"] == "stopped"
    delivered = delta_text(frames)
    assert 0 < len(delivered) < len(expected_answer(f"Tell me a lot {SLOW}", 400))
    reply = await get_message(saved(frames)["message"])
    assert reply.status == "stopped" and reply.content == delivered
    # An aborted stream carries no usage: the delivered text is counted locally, never as zero.
    assert reply.completion_tokens == token_count(delivered) == end["usage"]["completion_tokens"] > 0
    # ... and the call is accounted: one usage record, the quota moved from reserved to used.
    record, period = await usage_of(reply)
    assert (record.status, record.completion_tokens) == ("stopped", reply.completion_tokens)
    assert (period.used, period.reserved) == (record.billable_tokens, 0) == (end["quota"]["used"], 0)


async def test_disconnect_mid_stream_never_leaves_a_message_streaming(user):
    socket, _, _ = await open_socket(user)
    await socket.send({"type": "message", "conversation": None, "content": f"Long one {SLOW}"})
    frames = [await socket.receive()]
    while frames[-1]["type"] != "delta" or not any(f["type"] == "saved" for f in frames):
        frames.append(await socket.receive())
    await socket.communicator.disconnect(timeout=5)

    reply = await get_message(saved(frames)["message"])
    assert reply.status == "stopped"
    assert reply.content and reply.completion_tokens == token_count(reply.content)
    record, period = await usage_of(reply)
    assert (record.status, record.completion_tokens) == ("stopped", reply.completion_tokens)
    assert (period.used, period.reserved) == (record.billable_tokens, 0)


async def test_provider_error_mid_stream_saves_partial_answer(chat_socket):
    content = "Break [devllm fault=error_mid fault_after=4]"
    frames = await chat_socket.ask(content)
    end = frames[-1]
    assert end["status"] == "error"
    assert end["error"] == {"code": "provider_error", "message": "The model failed to answer."}
    assert delta_text(frames) == expected_answer(content, 4)
    reply = await get_message(saved(frames)["message"])
    assert (reply.status, reply.error_code, reply.content) == ("error", "provider_error", delta_text(frames))
    assert reply.completion_tokens == token_count(reply.content)


async def test_provider_failure_before_first_token_is_an_error_without_text(chat_socket):
    frames = await chat_socket.ask("Nope [devllm fault=error_before]")
    assert [f["type"] for f in frames] == ["start", "saved", "end"]
    assert frames[-1]["status"] == "error"
    reply = await get_message(saved(frames)["message"])
    assert (reply.status, reply.content, reply.completion_tokens) == ("error", "", 0)


async def test_regenerate_replaces_the_last_answer(chat_socket):
    first = await chat_socket.ask("Regenerate me")
    conversation_id = saved(first)["conversation"]["id"]
    await chat_socket.send({"type": "regenerate", "conversation": conversation_id})
    second = await chat_socket.receive_until("end")

    assert second[0] == {"type": "start", "conversation": conversation_id, "model": "demo-mini", "cached": False}
    assert saved(second)["user_message"] is None
    assert delta_text(second) == delta_text(first)  # deterministic model, same history
    assert saved(second)["message"] != saved(first)["message"] == first[-1]["message"]
    contents = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation_id=conversation_id).values_list("role", "status"))
    )()
    assert contents == [("user", "complete"), ("assistant", "complete")]


async def test_edit_puts_new_text_in_place_of_the_last_question_and_answers_it_anew(chat_socket):
    first = await chat_socket.ask("Frist question")
    conversation_id = saved(first)["conversation"]["id"]
    second = await chat_socket.ask("Second question", conversation=conversation_id)
    await chat_socket.send({"type": "edit", "conversation": conversation_id, "content": "Second question, fixed"})
    edited = await chat_socket.receive_until("end")

    assert edited[0]["type"] == "start" and edited[-1]["status"] == "complete"
    assert delta_text(edited).startswith("You said: Second question, fixed")
    assert saved(edited)["user_message"] not in (None, saved(second)["user_message"])
    rows = await database_sync_to_async(
        lambda: list(
            Message.objects.filter(conversation_id=conversation_id).order_by("id").values_list("role", "content")
        )
    )()
    assert [role for role, _ in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[0][1] == "Frist question" and rows[2][1] == "Second question, fixed"
    assert rows[3][1] == delta_text(edited)  # the old question and answer are gone, the first turn kept
    assert saved(edited)["conversation"]["title"] == "Frist question"  # not the edited question's


async def test_editing_the_only_question_retitles_a_conversation_titled_by_it(chat_socket):
    first = await chat_socket.ask("Typo in teh title")
    conversation_id = saved(first)["conversation"]["id"]
    await chat_socket.send({"type": "edit", "conversation": conversation_id, "content": "No typo in the title"})
    edited = await chat_socket.receive_until("end")
    assert saved(edited)["conversation"]["title"] == "No typo in the title"


@pytest.mark.parametrize(
    ("content", "code"), [("flag-me:violence please", "moderation_flagged"), ("   ", "invalid_frame")]
)
async def test_a_refused_edit_changes_nothing(chat_socket, content, code):
    first = await chat_socket.ask("Keep me")
    conversation_id = saved(first)["conversation"]["id"]
    await chat_socket.send({"type": "edit", "conversation": conversation_id, "content": content})
    assert (await chat_socket.receive_until("error"))[-1]["code"] == code
    rows = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation_id=conversation_id).values_list("pk", "content"))
    )()
    assert rows == [(saved(first)["user_message"], "Keep me"), (saved(first)["message"], delta_text(first))]


async def test_there_is_nothing_to_edit_while_the_answer_streams_or_before_any_answer(chat_socket, user):
    await chat_socket.send({"type": "message", "conversation": None, "content": f"Long {SLOW}"})
    frames = await chat_socket.receive_until("saved")
    conversation_id = saved(frames)["conversation"]["id"]
    await chat_socket.send({"type": "edit", "conversation": conversation_id, "content": "changed my mind"})
    assert (await chat_socket.receive_until("error"))[-1]["code"] == "busy"
    await chat_socket.send({"type": "stop"})
    await chat_socket.receive_until("end")

    empty = await database_sync_to_async(ConversationFactory)(user=user)
    await chat_socket.send({"type": "edit", "conversation": empty.pk, "content": "changed my mind"})
    assert (await chat_socket.receive())["code"] == "nothing_to_edit"


async def test_a_second_message_while_streaming_is_refused_as_busy(chat_socket):
    await chat_socket.send({"type": "message", "conversation": None, "content": f"Long {SLOW}"})
    assert (await chat_socket.receive())["type"] == "start"
    await chat_socket.send({"type": "message", "conversation": None, "content": "again"})
    frames = await chat_socket.receive_until("error")
    assert frames[-1]["code"] == "busy"
    await chat_socket.send({"type": "stop"})
    frames += await chat_socket.receive_until("end")
    assert frames[-1]["status"] == "stopped" and frames[-1]["message"] == saved(frames)["message"]
    assert await database_sync_to_async(Message.objects.filter(role="user").count)() == 1


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("this is not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ({"type": "launch-rockets"}, "unknown_type"),
        ({"content": "no type"}, "unknown_type"),
        ({"type": "message", "conversation": None}, "invalid_frame"),
        ({"type": "message", "conversation": None, "content": 42}, "invalid_frame"),
        ({"type": "message", "conversation": None, "content": "   "}, "invalid_frame"),
        ({"type": "message", "conversation": "7", "content": "hi"}, "invalid_frame"),
        ({"type": "message", "conversation": None, "content": "x" * 8001}, "too_large"),
        ({"type": "message", "conversation": None, "content": "hi", "model": "gpt-999"}, "unknown_model"),
        ({"type": "message", "conversation": None, "content": "hi", "model": ["demo-mini"]}, "invalid_frame"),
        ({"type": "regenerate"}, "invalid_frame"),
        ({"type": "edit", "content": "no conversation"}, "invalid_frame"),
        ({"type": "edit", "conversation": 1}, "invalid_frame"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(chat_socket, frame, code):
    await chat_socket.send(frame)
    error = await chat_socket.receive()
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await chat_socket.send({"type": "ping"})
    assert await chat_socket.receive() == {"type": "pong"}
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_oversize_frame_is_refused_before_parsing(chat_socket, settings):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    await chat_socket.send({"type": "message", "conversation": None, "content": "é" * 600})
    error = await chat_socket.receive()
    assert (error["code"], error["limit"]) == ("too_large", 1000)


async def test_binary_frame_is_refused(chat_socket):
    await chat_socket.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await chat_socket.receive())["code"] == "invalid_frame"


async def test_someone_elses_conversation_looks_exactly_like_a_missing_one(chat_socket, other_user):
    theirs = await database_sync_to_async(ConversationFactory)(user=other_user)
    await database_sync_to_async(MessageFactory)(conversation=theirs, role="assistant", content="secret")

    answers = []
    for conversation_id in (theirs.pk, theirs.pk + 1000):
        await chat_socket.send({"type": "message", "conversation": conversation_id, "content": "let me in"})
        answers.append(await chat_socket.receive())
        await chat_socket.send({"type": "regenerate", "conversation": conversation_id})
        answers.append(await chat_socket.receive())
        await chat_socket.send({"type": "edit", "conversation": conversation_id, "content": "mine now"})
        answers.append(await chat_socket.receive())
    assert len(set(map(str, answers))) == 1
    assert answers[0] == {"type": "error", "code": "not_found", "message": "Conversation not found."}
    assert await database_sync_to_async(Message.objects.filter(conversation=theirs).count)() == 1


async def test_changes_made_elsewhere_reach_the_users_other_sockets(chat_socket, user):
    other_tab, _, _ = await open_socket(user)
    frames = await chat_socket.ask("Sync me")
    conversation_id = saved(frames)["conversation"]["id"]
    assert await other_tab.receive(skip_events=False) == {
        "type": "conversation",
        "id": conversation_id,
        "title": "Sync me",
    }

    from chat.services import conversation_delete

    await database_sync_to_async(conversation_delete)(user=user, conversation_id=conversation_id)
    assert await other_tab.receive(skip_events=False) == {"type": "conversation_deleted", "id": conversation_id}
    assert not await database_sync_to_async(Conversation.objects.filter(pk=conversation_id).exists)()
    await other_tab.communicator.disconnect()


async def test_stop_when_nothing_streams_is_harmless(chat_socket):
    await chat_socket.send({"type": "stop"})
    await chat_socket.send({"type": "ping"})
    assert await chat_socket.receive() == {"type": "pong"}
    await asyncio.sleep(0)


async def test_a_conversation_deleted_while_the_reply_starts_ends_in_a_clean_error(chat_socket, user):
    first = await chat_socket.ask("Soon gone")
    conversation_id = saved(first)["conversation"]["id"]
    plan = await services.turn_plan(user=user, conversation_id=conversation_id, content="again", model=None)
    await database_sync_to_async(services.conversation_delete)(user=user, conversation_id=conversation_id)

    reply = services.reply_open(plan)
    sent = []

    async def collect(text):
        sent.append(text)

    outcome = await services.reply_stream(reply, on_text=collect, on_saved=collect, stop=asyncio.Event())
    assert (outcome.status, outcome.error_code, outcome.message_id) == ("error", "not_found", None)
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_a_frame_is_handled_while_the_thread_sensitive_thread_is_busy(chat_socket):
    """Frames do not queue behind the process's one thread-sensitive thread (channels' dispatch hops there
    before every handler; this consumer does not): a ping is answered while something else holds it."""
    from asgiref.sync import sync_to_async

    busy = asyncio.ensure_future(sync_to_async(time.sleep, thread_sensitive=True)(1.5))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await chat_socket.send({"type": "ping"})
    assert await chat_socket.receive(timeout=1) == {"type": "pong"}
    assert time.monotonic() - started < 0.5 and not busy.done()
    await busy

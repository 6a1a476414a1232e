"""The usage gate and accounting through the real chat websocket (consumer, dev LLM over HTTP, database)."""

import asyncio
from datetime import datetime

import pytest
from django.utils import timezone

from chat import services as chat_services
from chat.models import Message
from core.db import in_db_thread as database_sync_to_async
from tests.chat.conftest import delta_text, open_socket, saved
from tests.factories import UserFactory
from tests.usage.conftest import make_plan
from usage import services
from usage.models import ModerationEvent, QuotaPeriod, UsageRecord
from usage.services import gate
from usage.tokens import prompt_tokens_upper_bound, token_count

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "[devllm tokens=400 interval_ms=10]"


@database_sync_to_async
def records(user) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(user=user).order_by("id"))


@database_sync_to_async
def period_of(user) -> QuotaPeriod:
    now = timezone.now()
    return QuotaPeriod.objects.get(user=user, start__lte=now, end__gt=now)


@database_sync_to_async
def on_plan(user, **limits):
    plan = make_plan(**limits)
    services.plan_change(user=user, plan=plan)
    return plan


@pytest.fixture
def provider_calls(monkeypatch):
    """Counts completion requests sent to the provider (the real CompletionStream still runs)."""
    calls = []

    class CountedStream(chat_services.CompletionStream):
        def start(self):
            if self._producer is None:  # start() is idempotent; count the request, not the calls
                calls.append(self.messages)
            return super().start()

    monkeypatch.setattr(chat_services, "CompletionStream", CountedStream)
    return calls


async def assert_still_usable(socket):
    await socket.send({"type": "ping"})
    assert await socket.receive() == {"type": "pong"}


async def test_a_rate_limited_message_gets_an_error_frame_with_the_limit_and_when_to_retry(
    chat_socket, user, provider_calls
):
    await on_plan(user, requests_per_minute=2)
    for number in range(2):
        assert (await chat_socket.ask(f"hi {number}"))[-1]["status"] == "complete"

    await chat_socket.send({"type": "message", "conversation": None, "content": "one more"})
    error = await chat_socket.receive()

    assert error["type"] == "error" and error["code"] == "rate_limited"
    assert (error["limit"], error["limit_value"], error["remaining"]) == ("requests_per_minute", 2, 0)
    assert 25 <= error["retry_after"] <= 30  # one request every 30 s comes back
    reset_at = datetime.fromisoformat(error["reset_at"])
    assert 20 <= (reset_at - timezone.now()).total_seconds() <= 31
    assert len(provider_calls) == 2
    await assert_still_usable(chat_socket)


async def test_an_exhausted_quota_refuses_before_the_provider_is_called(chat_socket, user, provider_calls):
    await on_plan(user, monthly_token_allowance=50)

    await chat_socket.send({"type": "message", "conversation": None, "content": "hi"})
    error = await chat_socket.receive()

    assert error["code"] == "quota_exceeded" and error["limit"] == "monthly_tokens"
    assert error["remaining"] == 50 and error["reset_at"] == (await period_of(user)).end.isoformat()
    assert provider_calls == [] and await records(user) == []
    assert not await database_sync_to_async(Message.objects.exists)()


async def test_a_suspended_user_is_refused_in_the_chat_before_the_provider_is_called(chat_socket, user, provider_calls):
    staff = await database_sync_to_async(UserFactory)(is_staff=True)
    await database_sync_to_async(services.account_suspend)(actor=staff, user=user, reason="Abuse report")

    await chat_socket.send({"type": "message", "conversation": None, "content": "hi"})
    error = await chat_socket.receive()

    assert error["type"] == "error" and error["code"] == "account_suspended"
    assert "suspended" in error["message"]
    assert provider_calls == [] and await records(user) == []


async def test_a_model_outside_the_plan_is_refused(chat_socket, user):
    await on_plan(user, allowed_models=["demo-mini"])

    await chat_socket.send({"type": "message", "conversation": None, "content": "hi", "model": "demo-large"})

    assert (await chat_socket.receive())["code"] == "model_not_in_plan"


async def test_flagged_text_is_refused_recorded_and_never_sent_to_the_model(chat_socket, user, provider_calls):
    await chat_socket.send({"type": "message", "conversation": None, "content": "please flag-me:violence now"})
    error = await chat_socket.receive()

    assert error["code"] == "moderation_flagged" and error["categories"] == ["violence"]
    event = await database_sync_to_async(ModerationEvent.objects.get)(user=user)
    assert (event.content, event.categories, event.source) == ("please flag-me:violence now", ["violence"], "chat")
    assert provider_calls == [] and await records(user) == []
    assert not await database_sync_to_async(Message.objects.exists)()
    assert (await period_of(user)).reserved == 0  # the reservation was given back
    await assert_still_usable(chat_socket)


async def test_every_message_is_moderated_once_the_gate_admitted_it(chat_socket, moderation_requests):
    assert (await chat_socket.ask("first"))[-1]["status"] == "complete"
    assert (await chat_socket.ask("second"))[-1]["status"] == "complete"

    assert moderation_requests == [("first", 1), ("second", 2)]


async def test_flagged_text_is_refused_after_the_gate_and_gives_everything_back(
    chat_socket, user, provider_calls, moderation_requests
):
    assert (await chat_socket.ask("hello"))[-1]["status"] == "complete"

    await chat_socket.send({"type": "message", "conversation": None, "content": "flag-me:violence"})
    error = await chat_socket.receive()

    assert error["code"] == "moderation_flagged" and moderation_requests[-1] == ("flag-me:violence", 2)
    assert await database_sync_to_async(ModerationEvent.objects.filter(user=user).count)() == 1
    assert len(provider_calls) == 1 and len(await records(user)) == 1  # only the first message's
    assert (await period_of(user)).reserved == 0


async def test_a_gate_refusal_wins_over_flagged_text_and_records_nothing(
    chat_socket, user, provider_calls, moderation_requests
):
    assert (await chat_socket.ask("hello"))[-1]["status"] == "complete"
    await on_plan(user, monthly_token_allowance=50)

    await chat_socket.send({"type": "message", "conversation": None, "content": "please flag-me:violence now"})
    error = await chat_socket.receive()

    assert error["code"] == "quota_exceeded"  # the gate's order: the quota is checked before moderation
    assert moderation_requests == [("hello", 1)]  # never sent for the refused message
    assert not await database_sync_to_async(ModerationEvent.objects.exists)()
    assert len(provider_calls) == 1 and (await period_of(user)).reserved == 0
    await assert_still_usable(chat_socket)


async def test_requests_hammering_a_limit_cost_no_moderation_calls(chat_socket, user, moderation_requests):
    """Messages are moderated only once the gate admits them, so a client retrying against a limit cannot spend
    the provider's moderation capacity."""
    assert (await chat_socket.ask("first"))[-1]["status"] == "complete"
    await on_plan(user, monthly_token_allowance=50)

    for number in range(5):
        await chat_socket.send({"type": "message", "conversation": None, "content": f"again {number}"})
        assert (await chat_socket.receive())["code"] == "quota_exceeded"

    assert moderation_requests == [("first", 1)]

    await on_plan(user, slug="roomy")
    assert (await chat_socket.ask("admitted again"))[-1]["status"] == "complete"
    assert moderation_requests[1:] == [("admitted again", 2)]


async def test_moderation_can_be_switched_off(chat_socket, settings):
    settings.MODERATION_ENABLED = False

    assert (await chat_socket.ask("flag-me please"))[-1]["status"] == "complete"


async def test_a_repeated_prompt_is_served_from_the_cache_and_recorded_as_cached(chat_socket, user, provider_calls):
    first = await chat_socket.ask("What is a cache?")
    second = await chat_socket.ask("What is a cache?")  # a new conversation with the same prompt

    assert second[0]["cached"] is True and first[0]["cached"] is False
    assert delta_text(second) == delta_text(first)
    assert second[-1]["usage"] == first[-1]["usage"] and second[-1]["status"] == "complete"
    assert len(provider_calls) == 1
    generated, hit = await records(user)
    assert (hit.cached, hit.cost, hit.billable_tokens) == (True, 0, 0)  # PROMPT_CACHE_HIT_CHARGE = "none"
    assert (hit.prompt_tokens, hit.completion_tokens) == (generated.prompt_tokens, generated.completion_tokens)
    assert hit.message_id == saved(second)["message"]
    period = await period_of(user)
    assert (period.used, period.reserved) == (generated.billable_tokens, 0)


async def test_cache_hits_can_be_charged_in_full(chat_socket, user, settings):
    settings.PROMPT_CACHE_HIT_CHARGE = "full"
    await chat_socket.ask("Charge me twice")
    await chat_socket.ask("Charge me twice")

    generated, hit = await records(user)
    assert hit.cached and hit.billable_tokens == generated.billable_tokens > 0 and hit.cost == 0
    assert (await period_of(user)).used == 2 * generated.billable_tokens


async def test_the_cache_is_per_user(chat_socket, user, other_user, provider_calls):
    other_user.name = user.name  # even with an identical system prompt
    await database_sync_to_async(other_user.save)()
    await chat_socket.ask("Private question")
    other, _, _ = await open_socket(other_user)

    frames = await other.ask("Private question")
    await other.communicator.disconnect()

    assert frames[0]["cached"] is False and len(provider_calls) == 2


async def test_regenerate_never_reads_the_cache(chat_socket, provider_calls):
    first = await chat_socket.ask("Again please")
    await chat_socket.send({"type": "regenerate", "conversation": saved(first)["conversation"]["id"]})
    again = await chat_socket.receive_until("end")

    assert again[0]["cached"] is False and len(provider_calls) == 2


async def test_a_provider_error_mid_stream_records_what_was_produced(chat_socket, user):
    frames = await chat_socket.ask("Break [devllm fault=error_mid fault_after=4]")

    (record,) = await records(user)
    assert frames[-1]["status"] == "error" and record.status == "error"
    assert record.completion_tokens == token_count(delta_text(frames)) > 0
    assert (await period_of(user)).reserved == 0


async def test_a_provider_failing_before_any_text_charges_nothing_and_says_so(chat_socket, user):
    frames = await chat_socket.ask("Break at once [devllm fault=error_before]")

    (record,) = await records(user)  # the call is still accounted, once
    assert frames[-1]["status"] == "error" and frames[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert (record.status, record.billable_tokens, record.cost) == ("error", 0, 0)
    period = await period_of(user)
    assert (period.used, period.reserved) == (0, 0)


async def test_an_unreachable_limits_store_refuses_with_a_retryable_error(chat_socket, user, settings, provider_calls):
    settings.LIMITS_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    await chat_socket.send({"type": "message", "conversation": None, "content": "hi"})
    error = await chat_socket.receive()

    assert error["code"] == "limits_unavailable" and "try again" in error["message"]
    assert provider_calls == []
    await assert_still_usable(chat_socket)


async def test_fifty_racing_sockets_at_the_quota_boundary_never_overshoot(user, settings):
    """I1 end to end: 50 sockets of one user send at once with room for ~10 worst-case requests."""
    settings.PROMPT_CACHE_ENABLED = False
    # The race is for the quota in the database. channels-redis takes up to a second to let each of 50
    # sockets go at the end (its blocking receive), so this test uses the in-memory layer.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    content = "Race for the last tokens"
    prompt = chat_services.prompt_for(user, [{"role": "user", "content": content}])
    worst_case = prompt_tokens_upper_bound(prompt) + 100
    await on_plan(user, monthly_token_allowance=worst_case * 10 + 7, max_tokens_per_request=100)
    sockets = [(await open_socket(user))[0] for _ in range(50)]

    async def send(socket):
        await socket.send({"type": "message", "conversation": None, "content": content})
        first = await socket.receive(timeout=30)
        if first["type"] == "error":
            return first["code"]
        return (await socket.receive_until("end", timeout=30))[-1]["status"]

    outcomes = await asyncio.gather(*(send(socket) for socket in sockets))
    for socket in sockets:
        await socket.communicator.disconnect()

    period = await period_of(user)
    overshoot = max(0, period.used - period.allowance)
    assert overshoot == 0 and period.reserved == 0
    completed = outcomes.count("complete")
    assert completed >= 10 and completed + outcomes.count("quota_exceeded") == 50, outcomes
    assert len(await records(user)) == completed
    assert period.used == sum(record.billable_tokens for record in await records(user))


async def test_moderation_that_cannot_be_reached_refuses_and_gives_the_reservation_back(
    chat_socket, user, settings, provider_calls
):
    settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens there

    await chat_socket.send({"type": "message", "conversation": None, "content": "hi"})
    error = await chat_socket.receive()

    assert error["code"] == "moderation_unavailable" and "try again" in error["message"]
    assert provider_calls == [] and (await period_of(user)).reserved == 0


async def test_the_spend_cap_refuses_over_the_websocket(chat_socket, user, settings, provider_calls):
    settings.SPEND_KILL_SWITCH = True

    await chat_socket.send({"type": "message", "conversation": None, "content": "hi"})
    error = await chat_socket.receive()

    assert error["code"] == "paused" and provider_calls == []
    await assert_still_usable(chat_socket)


async def test_a_failing_quota_store_refuses_with_a_retryable_error(chat_socket, monkeypatch, provider_calls):
    """I8 for the database: the gate's read fails (as when PostgreSQL is down); nothing is sent to the model."""
    monkeypatch.setattr(gate, "_gate_state_sql", lambda by_api_key: "SELECT * FROM a_table_that_is_not_there")

    await chat_socket.send({"type": "message", "conversation": None, "content": "hi"})
    error = await chat_socket.receive()

    assert error["code"] == "quota_unavailable" and "try again" in error["message"]
    assert provider_calls == []
    await assert_still_usable(chat_socket)

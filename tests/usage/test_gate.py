"""The one gate (usage.services.gate_state, gate_admit) and settlement (usage_settle) on the event loop, with
PostgreSQL and Redis: nothing is remembered between calls, a refusal or a caller gone away keeps nothing, racing
requests never overshoot, and a settlement counts once in both stores however often it runs."""

import asyncio
import dataclasses
import itertools

import psycopg
import pytest
from django.utils import timezone

from chat import services as chat_services
from core.db import in_db_thread
from tests.factories import UserFactory
from tests.usage.conftest import deferred_settlements_drained, make_plan
from usage import limits, services
from usage.errors import AccountSuspended, LimitReached
from usage.models import QuotaPeriod, UsageRecord
from usage.services import gate
from usage.services import settle as settle_module

pytestmark = pytest.mark.django_db(transaction=True)

_plans = itertools.count()


@in_db_thread
def on_plan(user, **limits):
    services.plan_change(user=user, plan=make_plan(slug=f"plan-{next(_plans)}", **limits))


@in_db_thread
def period_of(user) -> QuotaPeriod:
    now = timezone.now()
    return QuotaPeriod.objects.get(user=user, start__lte=now, end__gt=now)


@in_db_thread
def period_set(user, **values) -> None:
    now = timezone.now()
    QuotaPeriod.objects.filter(user=user, start__lte=now, end__gt=now).update(**values)


async def admit(user, content="Hello there"):  # one content: every request the same size
    plan = await chat_services.turn_plan(user=user, conversation_id=None, content=content, model=None)
    return plan.admission


async def test_a_plan_changed_between_two_calls_is_the_one_applied(user):
    # The limit keeps the first request's place in its schedule: 20 s of the minute at 3 a minute. At 2 a minute
    # (30 s each) the second request fits and the third does not, however slowly the test runs (under 20 s);
    # at 3 a minute the third would fit.
    await on_plan(user, requests_per_minute=3)
    first = await admit(user)
    await on_plan(user, requests_per_minute=2)

    second = await admit(user, "Under the new plan")
    with pytest.raises(LimitReached) as refused:
        await admit(user, "Too fast for the new plan")

    assert refused.value.details["limit"] == "requests_per_minute" and refused.value.details["limit_value"] == 2
    assert (await period_of(user)).reserved == first.reserved_tokens + second.reserved_tokens  # refused: nothing


async def test_a_user_suspended_between_two_calls_is_refused_and_holds_nothing(user):
    await on_plan(user)
    first = await admit(user)
    staff = await in_db_thread(UserFactory)(is_staff=True)
    await in_db_thread(services.account_suspend)(actor=staff, user=user, reason="Abuse report")

    with pytest.raises(AccountSuspended):
        await admit(user)

    assert (await period_of(user)).reserved == first.reserved_tokens


async def test_a_quota_refusal_gives_the_daily_limit_back_what_it_took(user):
    """The quota refuses after the limits were taken: the tokens/day limit gets them back. If it did not, the
    day's limit would refuse a request it has room for."""
    await on_plan(user)
    worst_case = (await admit(user)).reserved_tokens
    await on_plan(user, tokens_per_day=worst_case * 3 + 1)
    await admit(user)  # the day's limit holds one worst case (and a sliver)
    period = await period_of(user)
    await period_set(user, allowance=period.used + period.reserved + worst_case - 1)

    with pytest.raises(LimitReached) as refused:
        await admit(user)
    await period_set(user, allowance=10**9)
    await admit(user)  # the day's second worst case, unless the refused request kept its share
    await admit(user)  # the third
    with pytest.raises(LimitReached) as day_limit:
        await admit(user)

    assert refused.value.code == "quota_exceeded" and day_limit.value.details["limit"] == "tokens_per_day"


@pytest.mark.parametrize("cut_at", ["the read", "the reservation"])
async def test_a_caller_that_goes_away_mid_gate_leaves_nothing_held(user, monkeypatch, cut_at):
    await on_plan(user)
    worst_case = (await admit(user)).reserved_tokens
    await on_plan(user, tokens_per_day=worst_case * 2 + 1)
    await admit(user)
    sent = asyncio.Event()
    name = "loop_fetchone" if cut_at == "the read" else "loop_execute"
    real = getattr(gate, name)

    async def statement(sql, params):
        sent.set()
        return await real(sql, params)

    monkeypatch.setattr(gate, name, statement)
    asking = asyncio.ensure_future(admit(user))
    await sent.wait()
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    monkeypatch.setattr(gate, name, real)

    assert (await period_of(user)).reserved == worst_case * 2
    await admit(user)  # the day's limit has room for a second worst case only if the cancelled one gave it back
    with pytest.raises(LimitReached) as day_limit:
        await admit(user)
    assert day_limit.value.details["limit"] == "tokens_per_day"


async def test_requests_racing_for_the_last_tokens_never_overshoot(user):
    """I1: 40 requests at once, with room for 10 worst cases."""
    await on_plan(user)
    worst_case = (await admit(user)).reserved_tokens
    period = await period_of(user)
    await period_set(user, allowance=period.used + period.reserved + worst_case * 10 + 7)

    outcomes = await asyncio.gather(*(admit(user) for _ in range(40)), return_exceptions=True)

    refused = [outcome for outcome in outcomes if isinstance(outcome, LimitReached)]
    assert len(refused) == 30 and all(error.code == "quota_exceeded" for error in refused), outcomes
    period = await period_of(user)
    assert period.reserved == worst_case * 11 and period.used + period.reserved <= period.allowance


async def settle(admission, *, used: int) -> settle_module.Settlement:
    """Settle `admission` as the chat does, `used` of its hold used (all of it counted as prompt tokens)."""
    return await services.usage_settle(
        admission=admission,
        conversation_id=None,
        message_id=None,
        model="demo-mini",
        status="complete",
        prompt_tokens=used,
        completion_tokens=0,
    )


async def tokens_left_today(admission) -> int:
    """What the tokens/day limit has room for: a take too big to pass reports it."""
    result = await limits.take([dataclasses.replace(admission.tokens_limit, cost=10**9)])
    assert not result.allowed
    return result.remaining


async def test_a_settlement_replayed_after_an_unclear_failure_counts_once_in_both_stores(user, monkeypatch):
    """The first attempt commits and then its answer is lost (the connection broke): the settlement is deferred,
    its replay records nothing more, and the tokens/day limit's give-back counts once."""
    await on_plan(user, tokens_per_day=10_000)  # 8.6 s per token comes back: none while the test runs
    admission = await admit(user)
    used = admission.reserved_tokens - 10
    real_fetchone, attempts = settle_module.loop_fetchone, []

    async def commits_then_breaks(sql, params):
        attempts.append(sql)
        row = await real_fetchone(sql, params)
        if len(attempts) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return row

    monkeypatch.setattr(settle_module, "loop_fetchone", commits_then_breaks)

    settlement = await settle(admission, used=used)
    assert settlement.meter is None  # deferred: the outcome is not known yet
    await deferred_settlements_drained()

    assert len(attempts) == 1  # the replay ran the statement itself, and found the call recorded
    assert await in_db_thread(UsageRecord.objects.filter(request_id=admission.request_id).count)() == 1
    period = await period_of(user)
    assert (period.used, period.reserved) == (used, 0)
    # The limit keeps what was used; had the retry's give-back counted too, 10 more would be free.
    assert await tokens_left_today(admission) == 10_000 - used


async def test_the_same_settlement_racing_itself_counts_once_in_both_stores(user):
    await on_plan(user, tokens_per_day=10_000)
    admission = await admit(user)
    used = admission.reserved_tokens - 10

    settlements = await asyncio.gather(*(settle(admission, used=used) for _ in range(8)))

    assert sum(settlement.recorded for settlement in settlements) == 1
    assert await in_db_thread(UsageRecord.objects.filter(request_id=admission.request_id).count)() == 1
    period = await period_of(user)
    assert (period.used, period.reserved) == (used, 0)
    assert await tokens_left_today(admission) == 10_000 - used

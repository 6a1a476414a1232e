"""Quota periods and reservations (I1, I6), settlement (I2), plan changes, the spend cap."""

import asyncio
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from django.core import mail
from django.utils import timezone

from core.errors import ServiceUnavailable
from tests.factories import UserFactory
from tests.usage.conftest import make_plan, on_loop, settled
from usage import selectors, services
from usage.models import QuotaPeriod, SpendControl, SpendDay, UsageRecord
from usage.tasks import expire_stale_reservations, reset_monthly_quotas
from usage.tokens import prompt_tokens_upper_bound

PROMPT = [{"role": "user", "content": "How many tokens can this take?"}]


async def admit_on_loop(user, plan=None, prompt=PROMPT):
    state = await services.gate_state(user=user)
    assert plan is None or state.plan.pk == plan.pk
    return await services.gate_admit(
        user=user, state=state, model="demo-mini", prompt=prompt, source="chat", cacheable=False
    )


def admit(user, plan=None, prompt=PROMPT):
    """Through the gate as a chat message would go; `plan` is the user's current plan (read by the gate)."""
    return on_loop(admit_on_loop, user, plan, prompt)


def settle_on_loop(admission, prompt_tokens, completion_tokens, status="complete"):
    return settled(admission, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, status=status)


def settle(admission, prompt_tokens, completion_tokens, status="complete"):
    return on_loop(settle_on_loop, admission, prompt_tokens, completion_tokens, status)


def current_period(user) -> QuotaPeriod:
    now = timezone.now()
    return QuotaPeriod.objects.get(user=user, start__lte=now, end__gt=now)


@pytest.mark.django_db(transaction=True)
def test_a_request_reserves_its_worst_case_and_settles_to_what_it_used(user, put_on_plan):
    plan = put_on_plan(user, max_tokens_per_request=100)

    admission = admit(user, plan)

    worst_case = prompt_tokens_upper_bound(PROMPT) + 100
    assert admission.reserved_tokens == worst_case
    period = current_period(user)
    assert (period.used, period.reserved) == (0, worst_case)

    settlement = settle(admission, prompt_tokens=9, completion_tokens=20)

    period.refresh_from_db()
    assert (period.used, period.reserved) == (29, 0)
    record = UsageRecord.objects.get(request_id=admission.request_id)
    assert (record.prompt_tokens, record.completion_tokens, record.billable_tokens) == (9, 20, 29)
    # demo-mini: $0.15 / $0.60 per million tokens
    assert record.cost == Decimal("0.0000133500") == (9 * Decimal("0.15") + 20 * Decimal("0.60")) / 1_000_000
    assert (record.user_id, record.source, record.cached, record.request_id) == (
        user.pk,
        "chat",
        False,
        admission.request_id,
    )
    assert SpendDay.objects.get(day=timezone.now().date()).cost == record.cost
    assert settlement.meter["used"] == 29 and settlement.meter["reserved"] == 0


@pytest.mark.django_db(transaction=True)
def test_settling_twice_accounts_once(user, put_on_plan):
    plan = put_on_plan(user)
    admission = admit(user, plan)

    first = settle(admission, 10, 10)
    again = settle(admission, 10, 10)

    assert first.recorded and not again.recorded
    assert UsageRecord.objects.count() == 1
    period = current_period(user)
    assert (period.used, period.reserved) == (20, 0)
    assert SpendDay.objects.get().requests == 1
    assert again.meter["used"] == 20


@pytest.mark.django_db(transaction=True)
def test_a_request_that_could_pass_the_allowance_is_refused_with_the_numbers(user, put_on_plan):
    worst_case = prompt_tokens_upper_bound(PROMPT) + 100
    plan = put_on_plan(user, monthly_token_allowance=worst_case * 2 - 1, max_tokens_per_request=100)
    admit(user, plan)

    with pytest.raises(services.LimitReached) as refused:
        admit(user, plan)

    details = refused.value.as_dict()
    period = current_period(user)
    assert details["code"] == "quota_exceeded" and details["limit"] == "monthly_tokens"
    assert details["remaining"] == worst_case - 1 and details["limit_value"] == worst_case * 2 - 1
    assert details["reset_at"] == period.end.isoformat()
    assert period.reserved == worst_case  # the refused request holds nothing


@pytest.mark.django_db(transaction=True)
def test_releasing_an_admission_gives_everything_back(user, put_on_plan):
    plan = put_on_plan(user, tokens_per_day=(prompt_tokens_upper_bound(PROMPT) + 100) * 1)
    admission = admit(user, plan)
    with pytest.raises(services.LimitReached):  # the daily tokens are all held
        admit(user, plan)

    on_loop(services.gate_release, admission)

    assert current_period(user).reserved == 0
    admit(user, plan)  # tokens/day was given back too


@pytest.mark.django_db(transaction=True)
def test_sixty_racing_requests_never_overshoot_the_allowance(put_on_plan):
    """I1: 60 requests reserve at once (on the loop pool's connections); exactly as many as fit get through, and
    settling each at its worst case leaves used <= allowance."""
    user = UserFactory()
    worst_case = prompt_tokens_upper_bound(PROMPT) + 100
    plan = put_on_plan(user, monthly_token_allowance=worst_case * 10 + worst_case // 2, max_tokens_per_request=100)
    services.quota_period_current(user=user, plan=plan)

    async def request():
        try:
            admission = await admit_on_loop(user, plan)
        except services.LimitReached:
            return "refused"
        await settle_on_loop(admission, prompt_tokens=worst_case - 100, completion_tokens=100)
        return "admitted"

    async def sixty():
        return await asyncio.gather(*(request() for _ in range(60)))

    outcomes = on_loop(sixty)

    period = current_period(user)
    overshoot = max(0, period.used - period.allowance)
    assert overshoot == 0
    assert (outcomes.count("admitted"), outcomes.count("refused")) == (10, 50)
    assert (period.used, period.reserved) == (worst_case * 10, 0)
    assert UsageRecord.objects.filter(user=user).count() == 10


@pytest.mark.django_db(transaction=True)
def test_the_period_rolls_over_on_access_without_beat(user, put_on_plan):
    """I6: last month's period is used up; the first request this month starts a fresh one."""
    plan = put_on_plan(user, monthly_token_allowance=5000)
    last_start, last_end = services.calendar_month(timezone.now() - timedelta(days=35))
    QuotaPeriod.objects.filter(user=user).delete()
    QuotaPeriod.objects.create(user=user, start=last_start, end=last_end, allowance=5000, used=5000)

    admission = admit(user, plan)

    period = QuotaPeriod.objects.get(pk=admission.period_id)
    start, end = services.calendar_month(timezone.now())
    assert (period.start, period.end, period.allowance, period.used) == (start, end, 5000, 0)
    assert QuotaPeriod.objects.filter(user=user).count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_monthly_reset_task_is_set_based_and_safe_to_run_twice(put_on_plan):
    now = timezone.now()
    this_start, this_end = services.calendar_month(now)
    last_start, last_end = services.calendar_month(now - timedelta(days=35))
    long_ago_start, long_ago_end = services.calendar_month(now - timedelta(days=100))
    due, missed_months, current, never_used = (UserFactory() for _ in range(4))
    pro = make_plan(slug="bigger", monthly_token_allowance=7777)
    services.plan_change(user=missed_months, plan=pro)
    QuotaPeriod.objects.create(user=due, start=last_start, end=last_end, allowance=1, used=1)
    QuotaPeriod.objects.create(user=missed_months, start=long_ago_start, end=long_ago_end, allowance=1, used=1)
    QuotaPeriod.objects.create(user=current, start=this_start, end=this_end, allowance=200_000, used=123)

    assert reset_monthly_quotas.apply().get() == 2
    state = sorted(QuotaPeriod.objects.values_list("user_id", "start", "end", "allowance", "used", "reserved"))
    assert reset_monthly_quotas.apply().get() == 0

    assert sorted(QuotaPeriod.objects.values_list("user_id", "start", "end", "allowance", "used", "reserved")) == state
    assert current_period(due).allowance == 200_000 and current_period(due).used == 0
    assert current_period(missed_months).allowance == 7777  # this month only; the missed one is skipped
    assert current_period(current).used == 123
    assert not QuotaPeriod.objects.filter(user=never_used).exists()  # gets one lazily, on first use


@pytest.mark.django_db(transaction=True)
def test_an_upgrade_raises_the_allowance_at_once(user, put_on_plan):
    small = put_on_plan(user, monthly_token_allowance=200)
    admit(user, small)
    with pytest.raises(services.LimitReached):
        admit(user, small)

    services.plan_change(user=user, plan=make_plan(slug="large", monthly_token_allowance=100_000))

    assert current_period(user).allowance == 100_000
    admit(user, selectors.plan_for(user=user))


@pytest.mark.django_db(transaction=True)
def test_every_new_user_starts_on_the_default_plan(user):
    assert selectors.plan_for(user=user).slug == "free"
    assert user.user_plan.plan.is_default


@pytest.mark.django_db(transaction=True)
def test_the_spend_cap_refuses_paid_calls_and_tells_staff_once(user, put_on_plan, settings):
    settings.SPEND_CAP_DAILY_USD = Decimal("5")
    settings.ADMINS = [("Staff", "staff@example.com")]
    plan = put_on_plan(user)
    SpendDay.objects.create(day=timezone.now().date(), shard=3, cost=Decimal("3.00"), requests=60)
    SpendDay.objects.create(day=timezone.now().date(), shard=7, cost=Decimal("2.00"), requests=40)

    for _ in range(3):
        with pytest.raises(services.SpendCapReached) as refused:
            admit(user, plan)
    details = refused.value.as_dict()
    assert details["limit"] == "spend_per_day"
    tomorrow = (timezone.now() + timedelta(days=1)).date()
    assert details["reset_at"] == f"{tomorrow.isoformat()}T00:00:00+00:00" and 0 < details["retry_after"] <= 86400
    assert not QuotaPeriod.objects.filter(user=user, reserved__gt=0).exists()
    assert len(mail.outbox) == 1 and "Spend cap reached" in mail.outbox[0].subject

    SpendControl.objects.create(daily_cap_usd=Decimal("50"))  # staff raise the cap in the admin
    admit(user, plan)


@pytest.mark.django_db(transaction=True)
def test_the_monthly_cap_and_the_kill_switch(user, put_on_plan, settings):
    settings.SPEND_CAP_MONTHLY_USD = Decimal("20")
    plan = put_on_plan(user)
    today = timezone.now().date()
    SpendDay.objects.create(day=today, shard=0, cost=Decimal("12"))
    if today.day > 1:
        SpendDay.objects.create(day=today.replace(day=1), shard=0, cost=Decimal("8"))
    else:
        SpendDay.objects.create(day=today, shard=1, cost=Decimal("8"))
    SpendDay.objects.create(day=today.replace(day=1) - timedelta(days=1), shard=0, cost=Decimal("1000"))  # last month

    with pytest.raises(services.SpendCapReached) as refused:
        admit(user, plan)
    assert refused.value.as_dict()["limit"] == "spend_per_month"

    settings.SPEND_CAP_MONTHLY_USD = Decimal("1000")
    admit(user, plan)
    SpendControl.objects.create(kill_switch=True)
    with pytest.raises(services.SpendCapReached) as paused:
        admit(user, plan)
    assert paused.value.code == "paused"


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_limits_store_refuses_the_call(user, put_on_plan, settings):
    """I8: the limiter pointed at a closed port refuses with a retryable error; nothing is reserved."""
    plan = put_on_plan(user)
    settings.LIMITS_REDIS_URL = "redis://127.0.0.1:1/0"

    with pytest.raises(ServiceUnavailable) as refused:
        admit(user, plan)

    assert refused.value.code == "limits_unavailable" and refused.value.http_status == 503
    assert not QuotaPeriod.objects.filter(user=user, reserved__gt=0).exists()


@pytest.mark.django_db(transaction=True)
def test_reservations_left_by_a_dead_process_are_released_and_a_late_settlement_stays_correct(user, put_on_plan):
    plan = put_on_plan(user, max_tokens_per_request=100)
    stale = admit(user, plan)  # its process "dies": never settled
    QuotaPeriod.objects.filter(pk=stale.period_id).update(reserved_at=timezone.now() - timedelta(minutes=20))
    other = UserFactory()
    live = admit(other)  # a request still running

    assert expire_stale_reservations.apply().get() == 1
    assert expire_stale_reservations.apply().get() == 0

    assert current_period(user).reserved == 0
    assert current_period(other).reserved == live.reserved_tokens
    settle(stale, 10, 5)  # the "dead" request was only slow after all
    period = current_period(user)
    assert (period.used, period.reserved) == (15, 0)


@pytest.mark.django_db(transaction=True)
def test_the_same_call_settled_concurrently_is_accounted_once(put_on_plan):
    """I2 under a race: eight settlements of one admission at once (on the loop pool's connections)."""
    user = UserFactory()
    admission = admit(user, put_on_plan(user))

    async def eight():
        return await asyncio.gather(*(settle_on_loop(admission, 10, 5) for _ in range(8)))

    results = [settlement.recorded for settlement in on_loop(eight)]

    assert sorted(results) == [False] * 7 + [True]
    assert UsageRecord.objects.filter(request_id=admission.request_id).count() == 1
    period = current_period(user)
    assert (period.used, period.reserved) == (15, 0)
    assert SpendDay.objects.get().requests == 1


@pytest.mark.django_db(transaction=True)
def test_an_answer_is_finished_only_together_with_its_accounting(user, put_on_plan):
    """The answer's UPDATE rides with the settlement (together_with): if the accounting cannot be written,
    the answer stays unfinished too, so a retry settles both."""
    from chat.services import turn_finish_statement
    from tests.factories import MessageFactory

    admission = admit(user, put_on_plan(user))
    reply = MessageFactory(conversation__user=user, role="assistant", status="streaming", content="")
    finish = turn_finish_statement(
        message_id=reply.pk,
        content="The answer.",
        status="complete",
        model="demo-mini",
        prompt_tokens=10,
        completion_tokens=5,
        error_code="",
        time_to_first_token_ms=100,
        duration_ms=500,
    )

    # A token count no record may hold (a CHECK constraint).
    with pytest.raises(psycopg.IntegrityError):
        on_loop(
            services.usage_settle,
            admission=admission,
            conversation_id=reply.conversation_id,
            message_id=reply.pk,
            model="demo-mini",
            status="complete",
            prompt_tokens=-1,
            completion_tokens=5,
            together_with=finish,
        )
    reply.refresh_from_db()
    assert (reply.status, reply.content) == ("streaming", "")
    assert not UsageRecord.objects.exists()

    settlement = on_loop(
        services.usage_settle,
        admission=admission,
        conversation_id=reply.conversation_id,
        message_id=reply.pk,
        model="demo-mini",
        status="complete",
        prompt_tokens=10,
        completion_tokens=5,
        together_with=finish,
    )
    reply.refresh_from_db()
    assert settlement.recorded
    assert (reply.status, reply.content, reply.completion_tokens) == ("complete", "The answer.", 5)
    assert UsageRecord.objects.get().message_id == reply.pk


@pytest.mark.django_db(transaction=True)
def test_a_settlement_is_one_statement(user, put_on_plan, monkeypatch):
    """One round trip and one commit for the answer and all its accounting (docs/performance.md)."""
    from usage.services import settle as settle_module

    admission = admit(user, put_on_plan(user))
    statements, real_fetchone = [], settle_module.loop_fetchone

    async def counted(sql, params):
        statements.append(sql)
        return await real_fetchone(sql, params)

    monkeypatch.setattr(settle_module, "loop_fetchone", counted)
    settlement = settle(admission, 10, 5)

    assert settlement.recorded and len(statements) == 1
    assert (current_period(user).used, SpendDay.objects.get().requests) == (15, 1)

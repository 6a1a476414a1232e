"""Metered usage to Stripe exactly once (I3): the outbox, Stripe failing and recovering, lost answers,
concurrent runs, reconciliation."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing import metering
from billing.models import MeterReport
from billing.tasks import report_usage
from tests.usage.conftest import answer, make_plan, race
from usage import services
from usage.models import Plan, UsageRecord


@pytest.fixture
def metered_user(user, customer):
    """A paying user whose tokens past 100 a period are billed per token."""
    plan = make_plan(
        slug="metered",
        monthly_token_allowance=100,
        metering=Plan.Metering.OVERAGE,
        overage_token_limit=1_000_000,
        stripe_lookup_key="aisaas_metered_monthly",
    )
    start = timezone.now() - timedelta(hours=1)
    services.plan_change(user=user, plan=plan, billing_cycle=(start, start + timedelta(days=30)))
    return user


def use(user, tokens: int) -> None:
    """One answer that used `tokens` tokens, through the real gate and settlement."""
    answer(user, prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2)


def run_outbox(times: int = 1) -> None:
    """The beat task, with every backoff already elapsed."""
    for _ in range(times):
        metering.meter_reports_prepare()
        metering.meter_reports_send(due_by=timezone.now() + timedelta(days=1))


def recorded_overage(user) -> int:
    total = sum(UsageRecord.objects.filter(user=user).values_list("billable_tokens", flat=True))
    return max(0, total - 100)


@pytest.mark.django_db(transaction=True)
def test_only_tokens_past_the_allowance_are_reported_with_the_customer_and_a_time_in_the_period(
    metered_user, customer, fake_stripe
):
    use(metered_user, 80)
    run_outbox()
    assert fake_stripe.meter_events == []  # still inside the allowance

    use(metered_user, 70)
    use(metered_user, 30)
    report_usage()

    [event] = fake_stripe.meter_events
    assert event["payload"] == {"stripe_customer_id": customer.id, "value": "80"}
    assert event["event_name"] == "aisaas_tokens"
    period = MeterReport.objects.get().period
    assert period.start.timestamp() <= event["timestamp"] < period.end.timestamp()

    use(metered_user, 25)
    report_usage()
    assert fake_stripe.metered() == {customer.id: 105} == {customer.id: recorded_overage(metered_user)}
    assert len({e["identifier"] for e in fake_stripe.meter_events}) == 2
    assert metering.metering_reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_a_plan_metering_every_token_reports_them_all(user, customer, fake_stripe):
    plan = make_plan(slug="payg", metering=Plan.Metering.ALL, stripe_lookup_key="aisaas_payg")
    services.plan_change(user=user, plan=plan, billing_cycle=(timezone.now(), timezone.now() + timedelta(days=30)))
    use(user, 40)
    use(user, 2)

    report_usage()

    assert fake_stripe.metered() == {customer.id: 42}


@pytest.mark.django_db(transaction=True)
def test_free_users_and_users_without_a_stripe_customer_are_never_reported(user, other_user, fake_stripe):
    use(user, 500)  # free plan: not metered
    plan = make_plan(slug="payg", metering=Plan.Metering.ALL)
    services.plan_change(user=other_user, plan=plan)  # metered, but no Stripe customer
    use(other_user, 500)

    report_usage()

    assert fake_stripe.meter_events == [] and not MeterReport.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_stripe_failing_for_a_while_then_recovering_loses_nothing_and_duplicates_nothing(
    metered_user, customer, fake_stripe
):
    use(metered_user, 150)
    fake_stripe.fail_next(3, status=500)
    run_outbox()  # refused
    assert fake_stripe.meter_events == []
    report = MeterReport.objects.get()
    assert (report.status, report.attempts) == ("pending", 1) and report.next_attempt_at > timezone.now()

    use(metered_user, 40)  # usage keeps coming while Stripe is down
    fake_stripe.fail_next(2, status=429)
    run_outbox(3)  # 500, 500 (retries), then 429, 429, then accepted
    use(metered_user, 10)
    run_outbox(3)

    assert fake_stripe.metered() == {customer.id: recorded_overage(metered_user)} == {customer.id: 100}
    identifiers = [e["identifier"] for e in fake_stripe.meter_events]
    assert len(identifiers) == len(set(identifiers))
    assert metering.metering_reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_an_answer_lost_after_stripe_accepted_is_not_sent_twice(metered_user, customer, fake_stripe):
    use(metered_user, 160)
    fake_stripe.lose_responses = 1  # Stripe stores the event, we never hear back

    run_outbox()
    assert MeterReport.objects.get().status == "pending"
    run_outbox()  # resent with the same identifier: Stripe says it has it, which counts as sent

    assert MeterReport.objects.get().status == "sent"
    assert fake_stripe.metered() == {customer.id: 60}
    assert len(fake_stripe.meter_events) == 1


@pytest.mark.django_db(transaction=True)
def test_the_task_run_concurrently_sends_each_usage_once(fake_stripe, settings):
    from djstripe.models import Customer

    from tests.factories import UserFactory

    plan = make_plan(slug="payg", metering=Plan.Metering.ALL, stripe_lookup_key="aisaas_payg")
    users = [UserFactory() for _ in range(6)]
    for user in users:
        Customer.get_or_create(subscriber=user)
        services.plan_change(user=user, plan=plan, billing_cycle=(timezone.now(), timezone.now() + timedelta(days=30)))
        use(user, 33)

    for _ in range(2):  # two beats, each with concurrent workers
        race(4, report_usage)
        for user in users:
            use(user, 7)
    race(4, report_usage)

    customers = dict(Customer.objects.values_list("subscriber_id", "id"))
    assert fake_stripe.metered() == {customers[u.pk]: 33 + 7 + 7 for u in users}
    identifiers = [e["identifier"] for e in fake_stripe.meter_events]
    assert len(identifiers) == len(set(identifiers))


@pytest.mark.django_db(transaction=True)
def test_reconcile_reports_a_difference_and_exits_non_zero(metered_user, customer, fake_stripe, capsys):
    use(metered_user, 130)
    report_usage()
    call_command("billing_reconcile")  # all reported: exit 0
    assert "agree" in capsys.readouterr().out

    use(metered_user, 20)  # recorded, not reported yet
    with pytest.raises(SystemExit) as exit_info:
        call_command("billing_reconcile")

    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert customer.id in out and "recorded 50" in out and "reported 30" in out

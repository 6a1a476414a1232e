"""Periods of paying users follow their subscription (I6), and overage plans may pass the allowance."""

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from core.db import loop_execute
from tests.usage.conftest import make_plan, on_loop
from usage import selectors, services
from usage.models import Plan, QuotaPeriod, UserPlan
from usage.services.periods import quota_reserve_statement


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (utc(2026, 1, 31, 9), 1, utc(2026, 2, 28, 9)),
        (utc(2028, 1, 31, 9), 1, utc(2028, 2, 29, 9)),
        (utc(2026, 11, 23, 9), 2, utc(2027, 1, 23, 9)),
        (utc(2026, 3, 31), -1, utc(2026, 2, 28)),
    ],
)
def test_months_are_added_as_stripe_bills_them(moment, months, expected):
    assert selectors.add_months(moment, months) == expected


@pytest.mark.parametrize(
    ("moment", "period"),
    [
        (utc(2026, 11, 23, 12), (utc(2026, 11, 23, 10, 30), utc(2026, 12, 23, 10, 30))),
        (utc(2026, 12, 23, 10, 29), (utc(2026, 11, 23, 10, 30), utc(2026, 12, 23, 10, 30))),
        (utc(2026, 12, 23, 10, 30), (utc(2026, 12, 23, 10, 30), utc(2027, 1, 23, 10, 30))),
        (utc(2027, 5, 1), (utc(2027, 4, 23, 10, 30), utc(2027, 5, 23, 10, 30))),
    ],
)
def test_a_billing_month_runs_from_the_subscription_anchor(moment, period):
    assert selectors.billing_month(utc(2026, 11, 23, 10, 30), moment) == period


@pytest.mark.django_db
def test_a_subscription_period_becomes_the_users_period_and_a_replay_changes_nothing(user):
    pro = Plan.objects.get(slug="pro")
    now = timezone.now()
    free_period = services.quota_period_current(user=user, plan=selectors.plan_for(user=user))
    QuotaPeriod.objects.filter(pk=free_period.pk).update(used=1234)
    cycle = (now.replace(microsecond=0), selectors.add_months(now.replace(microsecond=0), 1))

    for _ in range(2):  # the same subscription event delivered twice
        services.plan_change(user=user, plan=pro, billing_cycle=cycle)

    free_period.refresh_from_db()
    assert free_period.end == cycle[0]  # the free period ended when the subscription started
    current = QuotaPeriod.objects.containing(timezone.now()).get(user=user)
    assert (current.start, current.end, current.used) == (*cycle, 0)
    assert current.allowance == pro.monthly_token_allowance + pro.overage_token_limit
    assert UserPlan.objects.get(user=user).cycle_anchor == cycle[0]


@pytest.mark.django_db
def test_after_a_paid_period_ends_the_next_one_follows_the_subscription_not_the_calendar(user):
    pro = Plan.objects.get(slug="pro")
    anchor = utc(2026, 10, 5, 8)
    services.plan_change(user=user, plan=pro, billing_cycle=(anchor, selectors.add_months(anchor, 1)))

    later = services.quota_period_current(user=user, plan=pro, now=utc(2026, 12, 20))

    assert (later.start, later.end) == (utc(2026, 12, 5, 8), utc(2027, 1, 5, 8))
    # The calendar sweep leaves paying users alone: their periods follow the subscription.
    assert services.quota_periods_roll_over(now=utc(2027, 1, 10)) == 0


@pytest.mark.django_db
def test_back_on_calendar_months_once_the_subscription_is_gone(user):
    pro = Plan.objects.get(slug="pro")
    anchor = utc(2026, 10, 5, 8)
    services.plan_change(user=user, plan=pro, billing_cycle=(anchor, selectors.add_months(anchor, 1)))

    services.plan_change(user=user, plan=selectors.default_plan(), billing_cycle=None)

    later = services.quota_period_current(user=user, plan=selectors.default_plan(), now=utc(2026, 12, 20))
    assert (later.start, later.end) == (utc(2026, 12, 1), utc(2027, 1, 1))


@pytest.mark.django_db(transaction=True)  # the loop pool's connection sees committed rows only
def test_an_overage_plan_lets_a_period_pass_its_allowance_up_to_the_overage_limit(user):
    plan = make_plan(monthly_token_allowance=1000, metering=Plan.Metering.OVERAGE, overage_token_limit=500)
    services.plan_change(user=user, plan=plan)
    period = services.quota_period_current(user=user, plan=plan)

    def reserve(tokens: int) -> bool:
        return on_loop(loop_execute, *quota_reserve_statement(period_id=period.pk, tokens=tokens)) == 1

    assert reserve(1400)
    assert not reserve(101)


@pytest.mark.django_db
def test_allowances_and_bonuses_beyond_32_bits_are_applied_exactly(user):
    # With server-side binding Django sends a plain int parameter as int4: these would wrap around.
    services.quota_period_current(user=user, plan=selectors.plan_for(user=user))
    services.plan_change(user=user, plan=make_plan(monthly_token_allowance=10**15))
    staff = type(user).objects.create_user(email="staff@example.com", is_staff=True)
    services.bonus_tokens_grant(actor=staff, user=user, tokens=3 * 10**9, reason="Enterprise trial")

    period = QuotaPeriod.objects.containing(timezone.now()).get(user=user)
    assert (period.allowance, period.bonus_tokens) == (10**15 + 3 * 10**9, 3 * 10**9)

import pytest

from usage.models import Plan
from usage.services import plan_change


def make_plan(**overrides) -> Plan:
    fields = {
        "slug": "test",
        "name": "Test",
        "monthly_token_allowance": 1_000_000,
        "requests_per_minute": 1000,
        "requests_per_day": 10_000,
        "tokens_per_day": 10_000_000,
        "allowed_models": [],
        "max_tokens_per_request": 100,
        **overrides,
    }
    return Plan.objects.create(**fields)


@pytest.fixture
def put_on_plan():
    """Put a user on a fresh plan with the given limits: put_on_plan(user, requests_per_minute=2)."""

    def put(user, **overrides) -> Plan:
        plan = make_plan(**overrides)
        plan_change(user=user, plan=plan)
        return plan

    return put

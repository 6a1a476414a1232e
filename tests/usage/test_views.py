"""The user's own usage page and the meter on the chat page."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import ConversationFactory, UserFactory
from tests.usage.conftest import make_plan
from usage import services
from usage.models import QuotaPeriod, UsageRecord

pytestmark = pytest.mark.django_db


def record(user, *, model="demo-mini", prompt=100, completion=50, billable=None, when=None, cached=False):
    return UsageRecord.objects.create(
        user=user,
        request_id=f"r{UsageRecord.objects.count()}-{user.pk}",
        source="chat",
        model=model,
        status="complete",
        prompt_tokens=prompt,
        completion_tokens=completion,
        billable_tokens=prompt + completion if billable is None else billable,
        cost=0,
        cached=cached,
        latency_ms=10,
        created_at=when or timezone.now(),
    )


def test_the_usage_page_needs_a_login(client):
    response = client.get(reverse("usage:overview"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_usage_page_shows_this_periods_tokens_by_day_and_model(client, user):
    plan = make_plan(slug="p", name="Pro test", monthly_token_allowance=1000)
    services.plan_change(user=user, plan=plan)
    period = services.quota_period_current(user=user, plan=plan)
    QuotaPeriod.objects.filter(pk=period.pk).update(used=850)
    record(user, prompt=300, completion=200)
    record(user, model="demo-large", prompt=200, completion=150)
    record(user, prompt=10, completion=20, billable=0, cached=True)
    record(user, prompt=9999, completion=9999, when=period.start - timedelta(days=3))  # last period
    record(UserFactory(), prompt=7777, completion=7777)  # someone else
    client.force_login(user)

    response = client.get(reverse("usage:overview"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Pro test" in page and "850 of 1,000 tokens used" in page
    assert "You have used over 80% of this period" in page
    by_model = {row["model"]: row for row in response.context["by_model"]}
    assert by_model["demo-mini"]["prompt_tokens"] == 310 and by_model["demo-mini"]["billable_tokens"] == 500
    assert by_model["demo-large"]["requests"] == 1
    today = [day for day in response.context["days"] if day.day == timezone.now().date()]
    assert today[0].tokens == 850 and today[0].requests == 3  # the cache hit counted 0
    assert "9,999" not in page and "7,777" not in page
    assert response.context["chart"].maximum == 850 and "<svg" in page


def test_a_new_user_sees_a_full_allowance_without_a_period_being_created(client, user):
    client.force_login(user)
    response = client.get(reverse("usage:overview"))
    assert "0 of 200,000 tokens used" in response.content.decode()
    assert not QuotaPeriod.objects.filter(user=user).exists()  # reading never writes


def test_the_chat_page_shows_the_plan_meter_and_only_the_plans_models(client, user):
    plan = make_plan(slug="mini", name="Mini", allowed_models=["demo-large"], monthly_token_allowance=100)
    services.plan_change(user=user, plan=plan)
    QuotaPeriod.objects.filter(pk=services.quota_period_current(user=user, plan=plan).pk).update(used=100)
    ConversationFactory(user=user)
    client.force_login(user)

    config = client.get(reverse("chat:new")).context["chat_config"]

    assert config["plan"] == "Mini"
    assert config["models"] == ["demo-large"] and config["defaultModel"] == "demo-large"
    assert (config["quota"]["used"], config["quota"]["allowance"], config["quota"]["level"]) == (100, 100, "exhausted")

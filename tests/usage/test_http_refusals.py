"""A gate refusal over HTTP: the JSON error plus Retry-After and X-RateLimit-* (core.middleware). The view
here is a stand-in for the HTTP API to come: it passes the real gate for the signed-in user."""

from datetime import datetime

import pytest
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone

from tests.usage.conftest import admitted, make_plan, on_loop
from usage import services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]


async def _admit(user):
    return await admitted(user, prompt=[{"role": "user", "content": "hello"}], source="api")


def gated_view(request):
    user = request.user._wrapped if request.user.is_authenticated else None  # loaded here, not on the loop
    return JsonResponse({"request_id": on_loop(_admit, user).request_id})


urlpatterns = [path("gated/", gated_view)]


def test_a_rate_limited_request_gets_429_with_retry_after_and_rate_limit_headers(client, user):
    services.plan_change(user=user, plan=make_plan(requests_per_minute=1))
    client.force_login(user)

    assert client.get("/gated/").status_code == 200
    response = client.get("/gated/")

    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["limit"], error["remaining"]) == ("rate_limited", "requests_per_minute", 0)
    assert 55 <= int(response["Retry-After"]) <= 60
    assert response["X-RateLimit-Limit"] == "1" and response["X-RateLimit-Remaining"] == "0"
    reset = int(response["X-RateLimit-Reset"])
    assert reset == round(datetime.fromisoformat(error["limit_reset_at"]).timestamp())
    assert 50 <= reset - timezone.now().timestamp() <= 61


def test_an_exhausted_quota_is_429_too(client, user):
    services.plan_change(user=user, plan=make_plan(monthly_token_allowance=10))
    client.force_login(user)

    response = client.get("/gated/")

    assert response.status_code == 429 and response.json()["error"]["code"] == "quota_exceeded"
    assert int(response["Retry-After"]) > 0 and response["X-RateLimit-Limit"] == "10"


def test_the_kill_switch_is_503_without_rate_limit_headers(client, user, settings):
    settings.SPEND_KILL_SWITCH = True
    client.force_login(user)

    response = client.get("/gated/")

    assert response.status_code == 503 and response.json()["error"]["code"] == "paused"
    assert "Retry-After" not in response and "X-RateLimit-Limit" not in response

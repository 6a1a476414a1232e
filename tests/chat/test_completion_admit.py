"""The API's way through the gate (chat.completions.completion_admit): the key is checked by the gate's own
query, with the same answers as a separate lookup gave."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from aisaas.users import services as user_services
from aisaas.users.models import ApiKey
from chat.completions import AuthenticationFailed, completion_admit, completion_request_parse
from tests.usage.conftest import make_plan
from usage import services
from usage.models import UserPlan

pytestmark = pytest.mark.django_db


def request():
    return completion_request_parse({"model": "demo-mini", "messages": [{"role": "user", "content": "Hi there"}]})


@pytest.fixture
def raw_key(user):
    services.plan_change(user=user, plan=make_plan())
    return user_services.api_key_create(user=user, name="tests")[1]


def test_the_key_and_the_gate_state_are_one_query(user, raw_key):
    completion_admit(token=raw_key, request=request())  # records the key's first use

    with CaptureQueriesContext(connection) as queries:
        admission = completion_admit(token=raw_key, request=request())

    reads = [query["sql"] for query in queries.captured_queries if query["sql"].lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and "key_hash" in reads[0]
    assert admission.user_id == user.pk and admission.api_key_id == ApiKey.objects.get(user=user).pk
    assert admission.source == "api" and admission.reserved_tokens > 0


def test_last_use_is_recorded_at_most_once_a_minute(user, raw_key):
    completion_admit(token=raw_key, request=request())
    key = ApiKey.objects.get(user=user)
    first_use = key.last_used_at
    assert first_use is not None

    completion_admit(token=raw_key, request=request())
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first_use

    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    completion_admit(token=raw_key, request=request())
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first_use


def revoke(user):
    ApiKey.objects.filter(user=user).update(revoked_at=timezone.now())


def deactivate(user):
    type(user).objects.filter(pk=user.pk).update(is_active=False)


@pytest.mark.parametrize(
    ("spoil", "token_of"),
    [
        pytest.param(revoke, lambda key: key, id="revoked key"),
        pytest.param(deactivate, lambda key: key, id="inactive user"),
        pytest.param(None, lambda key: key[:-4] + "abcd", id="unknown key"),
        pytest.param(None, lambda key: "sk-proj-" + key, id="not one of our keys"),
    ],
)
def test_keys_that_do_not_open_the_gate(user, raw_key, spoil, token_of):
    if spoil:
        spoil(user)

    with pytest.raises(AuthenticationFailed), CaptureQueriesContext(connection) as queries:
        completion_admit(token=token_of(raw_key), request=request())

    assert len(queries.captured_queries) <= 1  # one lookup at most; a key that is not ours is not looked up
    period = services.gate_state(user=user).period
    assert period is None or period.reserved == 0


def test_the_owner_of_a_key_from_before_plans_existed_gets_the_default_plan(user, raw_key):
    UserPlan.objects.filter(user=user).delete()

    admission = completion_admit(token=raw_key, request=request())

    assert admission.user_id == user.pk
    assert UserPlan.objects.get(user=user).plan.is_default

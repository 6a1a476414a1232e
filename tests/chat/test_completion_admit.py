"""The API's way through the gate (chat.completions.completion_admit): the key is checked by the gate's own
query, with the same answers as a separate lookup gave."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat import completions
from chat.completions import AuthenticationFailed, completion_request_parse
from tests.usage.conftest import make_plan, on_loop
from usage import services
from usage.models import QuotaPeriod, UserPlan
from usage.services import gate
from users import services as user_services
from users.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)  # the gate's pool sees committed rows only


def completion_admit(**arguments):
    return on_loop(completions.completion_admit, **arguments)


@pytest.fixture
def gate_reads(monkeypatch):
    """The statements the gate reads with (core.db.loop_fetchone), as they are sent."""
    reads, real = [], gate.loop_fetchone

    async def counted(sql, params):
        reads.append(sql)
        return await real(sql, params)

    monkeypatch.setattr(gate, "loop_fetchone", counted)
    return reads


def request():
    return completion_request_parse({"model": "demo-mini", "messages": [{"role": "user", "content": "Hi there"}]})


@pytest.fixture
def raw_key(user):
    services.plan_change(user=user, plan=make_plan())
    return user_services.api_key_create(user=user, name="tests")[1]


def test_the_key_and_the_gate_state_are_one_query(user, raw_key, gate_reads):
    completion_admit(token=raw_key, request=request())  # records the key's first use
    gate_reads.clear()

    admission = completion_admit(token=raw_key, request=request())

    assert len(gate_reads) == 1 and "key_hash" in gate_reads[0]
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
def test_keys_that_do_not_open_the_gate(user, raw_key, spoil, token_of, gate_reads):
    if spoil:
        spoil(user)

    with pytest.raises(AuthenticationFailed):
        completion_admit(token=token_of(raw_key), request=request())

    assert len(gate_reads) <= 1  # one lookup at most; a key that is not ours is not looked up
    assert not QuotaPeriod.objects.filter(user=user, reserved__gt=0).exists()


def test_the_owner_of_a_key_from_before_plans_existed_gets_the_default_plan(user, raw_key):
    UserPlan.objects.filter(user=user).delete()

    admission = completion_admit(token=raw_key, request=request())

    assert admission.user_id == user.pk
    assert UserPlan.objects.get(user=user).plan.is_default

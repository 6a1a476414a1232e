"""The usage admin: staff read every usage table; nothing the gate writes is edited by hand."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from tests.factories import UserFactory
from tests.usage.conftest import make_plan
from usage import services
from usage.models import (
    AccountAction,
    ModerationEvent,
    Plan,
    QuotaPeriod,
    SpendControl,
    SpendDay,
    UsageDaily,
    UsageRecord,
    UserPlan,
)
from usage.selectors import plan_for

pytestmark = pytest.mark.django_db(transaction=True)  # the gate's pool sees committed rows only

MODELS = [Plan, UserPlan, QuotaPeriod, UsageRecord, SpendDay, SpendControl, ModerationEvent, AccountAction, UsageDaily]


@pytest.fixture
def superuser():
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_staff_can_list_every_usage_table_and_users_cannot(client, superuser, user, model):
    url = reverse(f"admin:usage_{model._meta.model_name}_changelist")
    client.force_login(user)
    assert client.get(url).status_code == 302  # to the admin login

    client.force_login(superuser)
    assert client.get(url).status_code == 200


def test_records_written_by_the_gate_cannot_be_edited_in_the_admin(client, superuser, user):
    period = services.quota_period_current(user=user, plan=plan_for(user=user))
    client.force_login(superuser)

    response = client.post(
        reverse("admin:usage_quotaperiod_change", args=[period.pk]), {"allowance": 10**12, "used": 0}
    )

    assert response.status_code == 403
    period.refresh_from_db()
    assert period.allowance == 200_000


def test_plans_cannot_be_changed_from_the_user_plan_list_only_through_the_audited_action(client, superuser, user):
    bigger = make_plan(slug="bigger", monthly_token_allowance=9_000_000)
    client.force_login(superuser)

    response = client.post(reverse("admin:usage_userplan_change", args=[user.pk]), {"user": user.pk, "plan": bigger.pk})

    assert response.status_code == 403
    assert UserPlan.objects.get(user=user).plan.slug == "free"


def test_only_superusers_change_the_spend_cap(client, user):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="usage"))
    client.force_login(staff)

    response = client.post(reverse("admin:usage_spendcontrol_add"), {"kill_switch": "on"})

    assert response.status_code == 403 and not SpendControl.objects.exists()

"""Staff token analytics: the rollup equals the raw records (after traffic, a rebuild, a retention purge), the
pages, the CSV, the user list's query count, and the audited account actions."""

import csv
import io
import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from chat.models import Feedback, Message
from chat.services import content_purge
from core.errors import InvalidInput
from tests.factories import MessageFactory, UserFactory
from tests.usage.conftest import answer, make_plan
from usage import services
from usage.errors import AccountSuspended
from usage.models import (
    AccountAction,
    ModerationEvent,
    Plan,
    QuotaPeriod,
    SpendDay,
    UsageDaily,
    UsageRecord,
    UserPlan,
)

pytestmark = pytest.mark.django_db(transaction=True)  # the gate's pool sees committed rows only

MODELS = ["demo-mini", "demo-large"]


@pytest.fixture
def superuser():
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def staff():
    return UserFactory(is_staff=True)


def random_traffic(users, count=60, seed=7):
    roomy = make_plan(slug=f"roomy-{seed}-{count}", requests_per_minute=1000)
    for user in users:
        services.plan_change(user=user, plan=roomy)
    rng = random.Random(seed)
    for _ in range(count):
        answer(
            rng.choice(users),
            model=rng.choice(MODELS),
            prompt_tokens=rng.randint(1, 400),
            completion_tokens=rng.randint(0, 900),
            cached=rng.random() < 0.2,
        )


def raw_totals():
    """What the records say, per (user, day, model): the truth the rollup must equal."""
    rows = (
        UsageRecord.objects.annotate(day=TruncDate("created_at"))
        .values("user_id", "day", "model")
        .annotate(
            requests=Count("id"),
            cached_requests=Count("id", filter=Q(cached=True)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            billable_tokens=Sum("billable_tokens"),
            cost=Sum("cost"),
        )
    )
    return {(r["user_id"], r["day"], r["model"]): _values(r) for r in rows}


def rollup_totals():
    return {(r.user_id, r.day, r.model): _values(r.__dict__) for r in UsageDaily.objects.all()}


def service_totals(rows):
    """Per (day, model): from the raw totals, or from SpendDay's shards."""
    totals = {}
    for key, values in rows:
        current = totals.get(key, (0, 0, 0, 0, 0, Decimal(0)))
        totals[key] = tuple(a + b for a, b in zip(current, values, strict=True))
    return totals


def rollups_match_records() -> bool:
    raw = raw_totals()
    spend_rows = [((r.day, r.model), _values(r.__dict__)) for r in SpendDay.objects.all()]
    return rollup_totals() == raw and service_totals(spend_rows) == service_totals(
        ((day, model), values) for (_, day, model), values in raw.items()
    )


def _values(row):
    return (
        row["requests"],
        row["cached_requests"],
        row["prompt_tokens"],
        row["completion_tokens"],
        row["billable_tokens"],
        Decimal(row["cost"]).quantize(Decimal("0.0000000001")),
    )


# --- the rollup ---------------------------------------------------------------------------------------------


def test_the_rollup_equals_the_records_after_random_traffic(user, other_user):
    random_traffic([user, other_user])

    assert rollups_match_records()
    assert sum(r.requests for r in UsageDaily.objects.all()) == UsageRecord.objects.count() == 60


def test_a_rebuild_recomputes_the_rollup_from_the_records_and_is_idempotent(user, other_user):
    random_traffic([user, other_user])
    UsageDaily.objects.update(requests=999, cost=Decimal(5))  # damaged
    SpendDay.objects.update(prompt_tokens=0)
    today = timezone.now().date()

    call_command("usage_rollup_rebuild", "--from", str(today - timedelta(days=1)), "--to", str(today))
    call_command("usage_rollup_rebuild", "--from", str(today), "--to", str(today))

    assert rollups_match_records()


def test_a_retention_purge_erases_content_but_not_usage(user, settings):
    random_traffic([user], count=10)
    old = MessageFactory(conversation__user=user, role=Message.Role.ASSISTANT, content="secret answer")
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    Feedback.objects.create(message=old, user=user, rating=-1, comment="private remark")
    ModerationEvent.objects.create(user=user, source="chat", content="flagged text", categories=["x"])
    ModerationEvent.objects.update(created_at=timezone.now() - timedelta(days=40))
    recent = MessageFactory(conversation__user=user, content="keep me")
    settings.CHAT_CONTENT_RETENTION_DAYS = 30

    assert content_purge() == 1

    old.refresh_from_db()
    assert old.content == "" and old.content_purged_at is not None
    assert Message.objects.get(pk=recent.pk).content == "keep me"
    assert ModerationEvent.objects.get().content == "" and Feedback.objects.get().comment == ""
    assert Feedback.objects.get().rating == -1  # the rating stays for the analytics
    assert rollups_match_records() and UsageRecord.objects.count() == 10


def test_retention_off_keeps_everything(user, settings):
    MessageFactory(conversation__user=user, content="old")
    Message.objects.update(created_at=timezone.now() - timedelta(days=4000))
    settings.CHAT_CONTENT_RETENTION_DAYS = 0

    assert content_purge() == 0 and Message.objects.get().content == "old"


# --- access -------------------------------------------------------------------------------------------------


def test_only_staff_see_the_analytics(client, user, staff):
    pages = [
        reverse("admin:usage_usagedaily_changelist"),
        reverse("admin:usage_user_analytics", args=[user.pk]),
    ]
    client.force_login(user)
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert (
        client.post(reverse("admin:usage_user_action", args=[user.pk]), {"kind": "suspend", "reason": "x"}).status_code
        == 302
    )
    assert UserPlan.objects.get(user=user).suspended_at is None

    client.force_login(staff)
    for url in pages:
        assert client.get(url).status_code == 200


def test_the_admin_index_links_to_token_analytics(client, staff):
    client.force_login(staff)

    page = client.get(reverse("admin:index")).content.decode()

    assert "Token analytics" in page and reverse("admin:usage_usagedaily_changelist") in page


# --- the analytics page -------------------------------------------------------------------------------------


def test_the_analytics_page_shows_totals_models_days_and_heaviest_users(client, staff, user, other_user):
    answer(user, model="demo-large", prompt_tokens=1000, completion_tokens=3000)
    answer(user, model="demo-mini", prompt_tokens=100, completion_tokens=100, cached=True)
    answer(other_user, model="demo-mini", prompt_tokens=50, completion_tokens=50)
    ModerationEvent.objects.create(user=other_user, source="chat", content="bad", categories=["violence"])
    client.force_login(staff)

    response = client.get(reverse("admin:usage_usagedaily_changelist"))

    page = response.content.decode()
    totals = response.context["totals"]
    assert (totals["prompt_tokens"], totals["completion_tokens"], totals["requests"]) == (1150, 3150, 3)
    assert totals["active_users"] == 2 and totals["moderation_refusals"] == 1
    assert round(totals["cache_hit_rate"], 4) == round(1 / 3, 4)
    heaviest = response.context["heaviest"]
    assert [row["email"] for row in heaviest] == [user.email, other_user.email]
    assert heaviest[0]["tokens"] == 4200 and round(heaviest[0]["share"], 4) == round(4200 / 4300, 4)
    assert [row["model"] for row in response.context["models"]] == ["demo-large", "demo-mini"]
    assert reverse("admin:usage_user_analytics", args=[user.pk]) in page
    assert "<svg" in page and "USD" in page


def test_the_charts_give_money_to_four_places_and_tokens_with_thousands_separators(client, staff, user):
    answer(user, model="demo-large", prompt_tokens=1000, completion_tokens=3000)  # $0.0325
    answer(user, model="demo-mini", prompt_tokens=700, completion_tokens=700)  # $0.000525
    client.force_login(staff)

    for url in (reverse("admin:usage_usagedaily_changelist"), reverse("admin:usage_user_analytics", args=[user.pk])):
        page = client.get(url).content.decode()
        assert "Tokens per day (UTC), highest 5,400 tokens" in page
        assert "Cost per day (UTC), highest 0.0330 USD" in page
        assert ": 0.0330 USD</title>" in page and ": 5,400 tokens</title>" in page  # each bar's tooltip


def test_filters_by_plan_and_model_and_a_bad_date_falls_back_with_a_message(client, staff, user, other_user):
    services.plan_change(user=user, plan=Plan.objects.get(slug="pro"))
    answer(user, model="demo-large", prompt_tokens=7, completion_tokens=3)
    answer(other_user, model="demo-mini", prompt_tokens=1, completion_tokens=1)
    client.force_login(staff)
    url = reverse("admin:usage_usagedaily_changelist")

    by_plan = client.get(url, {"plan": "pro"}).context["totals"]
    by_model = client.get(url, {"model": "demo-mini"}).context["totals"]
    bad = client.get(url, {"start": "yesterday", "end": "2026-13-40"})

    assert (by_plan["requests"], by_plan["prompt_tokens"]) == (1, 7)
    assert (by_model["requests"], by_model["prompt_tokens"]) == (1, 1)
    assert bad.status_code == 200 and "is not a date" in bad.content.decode()
    assert bad.context["totals"]["requests"] == 2  # this month


def test_a_range_without_usage_shows_zeros(client, staff, user):
    answer(user)
    client.force_login(staff)

    response = client.get(reverse("admin:usage_usagedaily_changelist"), {"start": "2020-01-01", "end": "2020-01-31"})

    assert response.context["totals"]["requests"] == 0
    assert len(response.context["days"]) == 31 and all(day["tokens"] == 0 for day in response.context["days"])


def test_the_csv_export_holds_what_the_page_shows(client, staff, user):
    answer(user, model="demo-large", prompt_tokens=40, completion_tokens=60)
    client.force_login(staff)

    response = client.get(reverse("admin:usage_usagedaily_changelist"), {"format": "csv"})

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:3] == ["section", "key", "requests"]
    total = next(row for row in rows if row[0] == "total")
    assert total[2:6] == ["1", "40", "60", "100"]
    assert any(row[0] == "model" and row[1] == "demo-large" and row[5] == "100" for row in rows)
    assert any(row[0] == "user" and row[1] == user.email and "share=1.0000" in row[7] for row in rows)
    days = [row for row in rows if row[0] == "day"]
    assert len(days) == timezone.now().day


def test_the_analytics_page_costs_the_same_queries_at_any_volume(
    client, staff, user, other_user, django_assert_max_num_queries
):
    client.force_login(staff)
    url = reverse("admin:usage_usagedaily_changelist")
    answer(user)
    with django_assert_max_num_queries(20) as small:
        client.get(url)
    random_traffic([user, other_user, *UserFactory.create_batch(5)], count=40)
    with django_assert_max_num_queries(20) as large:
        client.get(url)
    assert len(small.captured_queries) == len(large.captured_queries)


# --- the user list and the per-user page --------------------------------------------------------------------


def test_the_user_list_shows_plan_tokens_cost_and_last_activity_without_n_plus_one(
    client, superuser, user, django_assert_num_queries
):
    answer(user, prompt_tokens=100, completion_tokens=23)
    client.force_login(superuser)
    url = reverse("admin:users_user_changelist")

    response = client.get(url)
    page = response.content.decode()
    assert "123" in page and "Free" in page and "Token analytics" in page
    row = next(u for u in response.context["cl"].result_list if u.pk == user.pk)
    assert row.tokens_this_period == 123 and row.cost_this_period > 0 and row.last_active is not None

    expected = len(_queries(client, url))
    for other in UserFactory.create_batch(15):
        answer(other)
    with django_assert_num_queries(expected):
        client.get(url)


def _queries(client, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    return captured.captured_queries


@pytest.mark.parametrize("order", ["tokens_this_period", "cost_this_period", "last_active", "plan"])
def test_the_user_list_sorts_by_the_usage_columns(client, superuser, user, other_user, order):
    answer(user, prompt_tokens=500, completion_tokens=500)
    answer(other_user, prompt_tokens=1, completion_tokens=1)
    client.force_login(superuser)
    column = ["email", "plan", "tokens_this_period", "cost_this_period", "last_active"].index(order) + 1

    response = client.get(reverse("admin:users_user_changelist"), {"o": f"-{column}"})

    assert response.status_code == 200


def test_the_user_page_shows_the_period_recent_requests_feedback_and_moderation(client, staff, user):
    answer(user, model="demo-large", prompt_tokens=11, completion_tokens=22)
    message = MessageFactory(conversation__user=user, role=Message.Role.ASSISTANT, model="demo-large")
    Feedback.objects.create(message=message, user=user, rating=1)
    ModerationEvent.objects.create(user=user, source="chat", content="flagged words", categories=["harassment"])
    client.force_login(staff)

    response = client.get(reverse("admin:usage_user_analytics", args=[user.pk]))

    page = response.content.decode()
    assert response.context["meter"]["used"] == 33
    assert [r.model for r in response.context["recent_requests"]] == ["demo-large"]
    assert response.context["feedback"] == {"up": 1, "down": 0} and response.context["conversations"] == 1
    assert "harassment" in page and "flagged words" in page and "Free" in page
    assert client.get(reverse("admin:usage_user_analytics", args=[999999])).status_code == 404


# --- account actions, audited -------------------------------------------------------------------------------


def act(client, user, **fields):
    return client.post(reverse("admin:usage_user_action", args=[user.pk]), fields, follow=True)


def test_bonus_tokens_raise_this_periods_allowance_and_are_recorded(client, superuser, user):
    client.force_login(superuser)

    act(client, user, kind="bonus_tokens", tokens="5000", reason="Apology for the outage")

    period = QuotaPeriod.objects.containing(timezone.now()).get(user=user)
    assert (period.allowance, period.bonus_tokens) == (205_000, 5000)
    entry = AccountAction.objects.get()
    assert (entry.kind, entry.actor, entry.user, entry.reason) == (
        "bonus_tokens",
        superuser,
        user,
        "Apology for the outage",
    )
    assert entry.detail["tokens"] == 5000
    services.plan_change(user=user, plan=Plan.objects.get(slug="pro"))  # the bonus survives a plan change
    period.refresh_from_db()
    assert period.allowance == Plan.objects.get(slug="pro").period_token_limit + 5000


def test_a_period_reset_forgets_what_was_used(client, superuser, user):
    answer(user, prompt_tokens=100, completion_tokens=100)
    client.force_login(superuser)

    act(client, user, kind="period_reset", reason="Testing account")

    assert QuotaPeriod.objects.containing(timezone.now()).get(user=user).used == 0
    assert AccountAction.objects.get().detail["used_before"] == 200


def test_a_plan_change_from_the_admin_is_recorded(client, superuser, user):
    client.force_login(superuser)
    pro = Plan.objects.get(slug="pro")

    act(client, user, kind="plan_change", plan=str(pro.pk), reason="Partner account")

    assert UserPlan.objects.get(user=user).plan == pro
    assert AccountAction.objects.get().detail == {"before": "free", "after": "pro"}


def test_a_suspended_user_is_refused_everywhere_until_reactivated(client, staff, user):
    client.force_login(staff)

    act(client, user, kind="suspend", reason="Abuse report #12")

    with pytest.raises(AccountSuspended) as refused:
        answer(user)
    assert refused.value.http_status == 403 and "suspended" in str(refused.value)
    act(client, user, kind="reactivate", reason="Resolved")
    answer(user)
    assert list(AccountAction.objects.order_by("created_at").values_list("kind", flat=True)) == [
        "suspend",
        "reactivate",
    ]


def test_money_actions_need_a_superuser_and_every_action_needs_a_reason(client, staff, user):
    client.force_login(staff)

    response = client.post(
        reverse("admin:usage_user_action", args=[user.pk]), {"kind": "bonus_tokens", "tokens": "9", "reason": "x"}
    )
    assert response.status_code == 403
    page = act(client, user, kind="suspend", reason="   ").content.decode()
    assert "reason" in page.lower()
    assert not AccountAction.objects.exists() and UserPlan.objects.get(user=user).suspended_at is None
    with pytest.raises(InvalidInput):
        services.bonus_tokens_grant(actor=staff, user=user, tokens=0, reason="why")

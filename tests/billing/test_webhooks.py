"""Stripe webhooks through dj-stripe's real view and signals (I4): signed deliveries, replays, concurrency,
out-of-order events; what each subscription state means for the user's plan and periods."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import stripe
from django.core import mail
from django.test import Client
from django.utils import timezone
from djstripe.models import Event, Subscription, WebhookEventTrigger

from tests.billing.conftest import now_ts
from tests.fake_stripe import WEBHOOK_SECRET, sign
from tests.usage.conftest import race
from usage.models import Plan, QuotaPeriod, UserPlan

DAY = 86400


def plan_of(user) -> str:
    return UserPlan.objects.select_related("plan").get(user=user).plan.slug


@pytest.fixture
def subscribe(fake_stripe, customer, pro_prices):
    """Stripe's side: the customer subscribes to Pro (as Checkout would leave it)."""

    def make(status="active", start=None, **fields):
        start = start or now_ts() - 60
        return fake_stripe.subscription(
            customer=customer.id, price=pro_prices[0], status=status, start=start, end=start + 30 * DAY, **fields
        )

    return make


@pytest.mark.django_db(transaction=True)
def test_a_confirmed_subscription_puts_the_user_on_its_plan_with_its_period(user, fake_stripe, subscribe, deliver):
    subscription = subscribe()

    response = deliver(fake_stripe.event("customer.subscription.created", subscription))

    assert response.status_code == 200
    assert plan_of(user) == "pro"
    period = QuotaPeriod.objects.containing(timezone.now()).get(user=user)
    item = subscription["items"]["data"][0]
    assert period.start == datetime.fromtimestamp(item["current_period_start"], UTC)
    assert period.end == datetime.fromtimestamp(item["current_period_end"], UTC)
    pro = Plan.objects.get(slug="pro")
    assert period.allowance == pro.period_token_limit and period.metered_after == pro.monthly_token_allowance
    assert Subscription.objects.get(id=subscription["id"]).status == "active"
    assert not fake_stripe.unhandled


@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_ten_times_applies_once(user, fake_stripe, subscribe, deliver):
    event = fake_stripe.event("customer.subscription.created", subscribe())

    responses = [deliver(event) for _ in range(10)]

    assert [r.status_code for r in responses] == [200] * 10
    assert Event.objects.filter(id=event["id"]).count() == 1
    assert plan_of(user) == "pro"
    assert QuotaPeriod.objects.filter(user=user).containing(timezone.now()).count() == 1
    # Processed once: the subscription was fetched from Stripe for the first delivery only.
    assert fake_stripe.paths("GET").count(f"/v1/subscriptions/{event['data']['object']['id']}") <= 2


@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_concurrently_applies_once(user, fake_stripe, subscribe, deliver):
    event = fake_stripe.event("customer.subscription.created", subscribe())

    statuses = race(8, lambda: deliver(event, http=Client()).status_code)

    assert statuses == [200] * 8
    assert Event.objects.filter(id=event["id"]).count() == 1
    assert plan_of(user) == "pro"
    assert QuotaPeriod.objects.filter(user=user).containing(timezone.now()).count() == 1


@pytest.mark.django_db(transaction=True)
def test_events_out_of_order_end_in_the_state_stripe_reports(user, fake_stripe, subscribe, deliver):
    subscription = subscribe()
    created = fake_stripe.event("customer.subscription.created", subscription)
    subscription["status"] = "canceled"
    subscription["ended_at"] = now_ts()
    deleted = fake_stripe.event("customer.subscription.deleted", subscription)

    # Stripe delivers the cancellation first, then the (older) creation.
    assert deliver(deleted).status_code == 200
    assert deliver(created).status_code == 200

    assert plan_of(user) == "free"
    assert UserPlan.objects.get(user=user).cycle_anchor is None


@pytest.mark.django_db(transaction=True)
def test_an_upgrade_raises_the_allowance_at_once_and_keeps_what_was_used(user, fake_stripe, subscribe, deliver):
    subscription = subscribe()
    deliver(fake_stripe.event("customer.subscription.created", subscription))
    period = QuotaPeriod.objects.containing(timezone.now()).get(user=user)
    QuotaPeriod.objects.filter(pk=period.pk).update(used=4321)
    bigger = Plan.objects.create(
        slug="team",
        name="Team",
        monthly_token_allowance=50_000_000,
        requests_per_minute=120,
        requests_per_day=20_000,
        tokens_per_day=5_000_000,
        max_tokens_per_request=4096,
        stripe_lookup_key="aisaas_team_monthly",
        price_usd_per_month=100,
    )
    team_price = fake_stripe.price(product=fake_stripe.get("aisaas_pro"), lookup_key=bigger.stripe_lookup_key)
    subscription["items"]["data"][0]["price"] = team_price  # changed in the portal

    assert deliver(fake_stripe.event("customer.subscription.updated", subscription)).status_code == 200

    assert plan_of(user) == "team"
    period.refresh_from_db()
    assert (period.allowance, period.used) == (50_000_000, 4321)


@pytest.mark.django_db(transaction=True)
def test_cancel_at_period_end_keeps_the_plan_until_stripe_ends_it(user, fake_stripe, subscribe, deliver):
    subscription = subscribe()
    deliver(fake_stripe.event("customer.subscription.created", subscription))

    subscription["cancel_at_period_end"] = True
    deliver(fake_stripe.event("customer.subscription.updated", subscription))
    assert plan_of(user) == "pro"

    subscription["status"] = "canceled"
    deliver(fake_stripe.event("customer.subscription.deleted", subscription))
    assert plan_of(user) == "free"


@pytest.mark.django_db(transaction=True)
def test_past_due_keeps_the_plan_for_the_grace_period_then_falls_back(user, fake_stripe, subscribe, deliver, settings):
    from billing.services import past_due_grace_enforce

    settings.BILLING_PAST_DUE_GRACE_DAYS = 3
    subscription = subscribe(status="past_due", start=now_ts() - 2 * DAY)
    deliver(fake_stripe.event("customer.subscription.updated", subscription))
    assert plan_of(user) == "pro"  # day 2 of 3

    assert past_due_grace_enforce() == 0
    settings.BILLING_PAST_DUE_GRACE_DAYS = 1  # now beyond the grace period
    assert past_due_grace_enforce() == 1
    assert plan_of(user) == "free"


@pytest.mark.django_db(transaction=True)
def test_a_failed_payment_and_a_trial_ending_email_the_user(user, fake_stripe, subscribe, deliver, customer):
    subscription = subscribe(status="trialing", trial_end=now_ts() + 3 * DAY)
    deliver(fake_stripe.event("customer.subscription.trial_will_end", subscription))
    invoice = fake_stripe.put(
        {**fake_stripe_invoice(customer.id, subscription["id"]), "hosted_invoice_url": "https://invoice.stripe.com/i/x"}
    )
    deliver(fake_stripe.event("invoice.payment_failed", invoice))

    subjects = sorted(message.subject for message in mail.outbox)
    assert subjects == ["[aisaas] Your payment failed", "[aisaas] Your trial ends soon"]
    assert all(message.to == [user.email] for message in mail.outbox)
    failed = next(m for m in mail.outbox if "payment" in m.subject)
    assert "https://invoice.stripe.com/i/x" in failed.body
    assert plan_of(user) == "pro"  # trialing is a paid plan


def fake_stripe_invoice(customer_id: str, subscription_id: str) -> dict:
    import copy

    from tests.fake_stripe import FIXTURES, new_id

    invoice = copy.deepcopy(FIXTURES["invoice"])
    invoice.update(id=new_id("in"), customer=customer_id, status="open", attempt_count=1, attempted=True)
    invoice["parent"] = {"type": "subscription_details", "subscription_details": {"subscription": subscription_id}}
    return invoice


@pytest.mark.django_db(transaction=True)
def test_a_bad_or_missing_signature_is_refused_and_changes_nothing(user, fake_stripe, subscribe, deliver):
    event = fake_stripe.event("customer.subscription.created", subscribe())

    assert deliver(event, secret="whsec_someone_else").status_code == 400
    assert deliver(event, signature="").status_code == 400
    assert deliver(event, signature="t=1,v1=deadbeef").status_code == 400
    assert deliver(event, signature="garbage, not a signature header").status_code == 400
    an_hour_ago = int(time.time()) - 3600  # a replay: signed rightly, but long ago
    stale = stripe.WebhookSignature.generate_signature_header(json.dumps(event), WEBHOOK_SECRET, an_hour_ago)
    assert deliver(event, signature=stale).status_code == 400
    tampered = json.dumps({**event, "livemode": not event["livemode"]})
    assert deliver(tampered, signature=sign(json.dumps(event))).status_code == 400

    assert not Event.objects.exists()
    assert not WebhookEventTrigger.objects.exists()  # nothing stored for a refused delivery
    assert plan_of(user) == "free"


@pytest.mark.django_db(transaction=True)
def test_malformed_json_is_refused(fake_stripe, deliver):
    assert deliver("{not json").status_code == 400
    assert deliver(json.dumps([1, 2])).status_code == 400
    assert not Event.objects.exists() and not WebhookEventTrigger.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_unknown_event_type_is_acknowledged_and_does_nothing(user, fake_stripe, deliver):
    event = fake_stripe.event("some.future.event", {"id": "obj_1", "object": "mystery"})

    assert deliver(event).status_code == 200
    assert plan_of(user) == "free"
    assert fake_stripe.paths("POST") == []


@pytest.mark.django_db(transaction=True)
def test_a_webhook_for_an_unknown_endpoint_is_not_found(fake_stripe, deliver, client):
    from tests.fake_stripe import sign

    body = json.dumps(fake_stripe.event("customer.created", {"id": "cus_x", "object": "customer"}))
    response = client.post(
        "/stripe/webhook/00000000-0000-0000-0000-000000000000/",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body),
    )
    assert response.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_subscription_of_a_customer_with_no_user_is_acknowledged_and_changes_no_plan(
    user, fake_stripe, pro_prices, deliver
):
    stranger = fake_stripe.customer(email="someone@elsewhere.example")  # made in Stripe's dashboard
    start = now_ts()
    subscription = fake_stripe.subscription(customer=stranger["id"], price=pro_prices[0], start=start, end=start + DAY)

    assert deliver(fake_stripe.event("customer.subscription.created", subscription)).status_code == 200
    assert set(UserPlan.objects.values_list("plan__slug", flat=True)) == {"free"}


@pytest.mark.django_db(transaction=True)
def test_accepted_raw_events_are_kept_for_the_retention_period_then_purged(user, fake_stripe, subscribe, deliver,
                                                                          settings):  # fmt: skip
    from billing.tasks import purge_webhook_events

    settings.BILLING_WEBHOOK_RETENTION_DAYS = 30
    assert deliver(fake_stripe.event("customer.subscription.created", subscribe())).status_code == 200
    assert deliver(fake_stripe.event("some.future.event", {"id": "obj_1", "object": "mystery"})).status_code == 200
    old, recent = WebhookEventTrigger.objects.order_by("id")
    WebhookEventTrigger.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=31))

    assert purge_webhook_events.apply().get() == 1
    assert purge_webhook_events.apply().get() == 0  # safe to run twice

    assert list(WebhookEventTrigger.objects.values_list("pk", flat=True)) == [recent.pk]
    assert plan_of(user) == "pro"  # what the events did stays

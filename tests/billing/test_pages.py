"""Pricing, Checkout, the billing page and the portal, with the real stripe-python against the fake Stripe;
and the embedded default, where billing is not configured."""

import pytest
from django.urls import reverse
from djstripe.models import Customer

from tests.billing.conftest import now_ts
from usage.models import Plan, UserPlan

pytestmark = pytest.mark.django_db


def test_pricing_is_public_and_lists_every_plan_with_its_limits(client, fake_stripe):
    response = client.get(reverse("billing:pricing"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Free" in page and "Pro" in page and "$20.00" in page
    assert "5,000,000 tokens a month" in page and "$2.00" in page  # pro's overage price per 1M tokens
    assert "Sign up to subscribe" in page


def test_pricing_marks_the_current_plan_and_offers_the_others(client, user, fake_stripe):
    client.force_login(user)

    page = client.get(reverse("billing:pricing")).content.decode()

    assert 'class="plan current" id="plan-free"' in page
    assert reverse("billing:checkout", args=["pro"]) in page


def test_subscribing_starts_a_checkout_session_for_the_plans_prices_and_the_users_customer(
    client, user, fake_stripe, pro_prices
):
    client.force_login(user)

    response = client.post(reverse("billing:checkout", args=["pro"]))

    assert response.status_code == 302
    assert response["Location"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    [session] = fake_stripe.of_type("checkout.session")
    customer = Customer.objects.get(subscriber=user)
    assert session["customer"] == customer.id and session["mode"] == "subscription"
    assert session["line_items_requested"] == [
        {"price": pro_prices[0]["id"], "quantity": "1"},
        {"price": pro_prices[1]["id"]},
    ]
    assert session["success_url"].endswith(reverse("billing:checkout_success"))
    assert session["cancel_url"].endswith(reverse("billing:checkout_cancel"))
    assert UserPlan.objects.get(user=user).plan.slug == "free"  # not before Stripe confirms

    client.post(reverse("billing:checkout", args=["pro"]))  # again: the same customer is reused
    assert Customer.objects.filter(subscriber=user).count() == 1
    assert fake_stripe.paths("POST").count("/v1/customers") == 1


def test_a_user_with_a_subscription_is_sent_to_the_billing_page_not_to_a_second_checkout(
    client, user, fake_stripe, pro_prices, customer
):
    from billing.services import user_plan_sync

    subscription = fake_stripe.subscription(
        customer=customer.id, price=pro_prices[0], start=now_ts(), end=now_ts() + 86400 * 30
    )
    user_plan_sync(user=user, subscription_id=subscription["id"])
    client.force_login(user)

    response = client.post(reverse("billing:checkout", args=["pro"]), follow=True)

    assert response.redirect_chain[-1][0] == reverse("billing:overview")
    assert "already have a subscription" in response.content.decode()
    assert fake_stripe.of_type("checkout.session") == []


def test_a_plan_that_is_not_sold_or_does_not_exist_cannot_be_bought(client, user, fake_stripe):
    client.force_login(user)

    assert client.post(reverse("billing:checkout", args=["nope"])).status_code == 404
    response = client.post(reverse("billing:checkout", args=["free"]), follow=True)
    assert "cannot be bought" in response.content.decode()
    assert client.get(reverse("billing:checkout", args=["pro"])).status_code == 405


def test_stripe_down_during_checkout_gives_a_clear_message_not_an_error(client, user, fake_stripe, pro_prices):
    client.force_login(user)
    fake_stripe.fail_next(10, status=500)

    response = client.post(reverse("billing:checkout", args=["pro"]), follow=True)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Billing is unavailable right now" in page and "sk_test" not in page


def test_the_billing_page_shows_plan_status_renewal_usage_and_invoices(client, user, fake_stripe, pro_prices, customer):
    from djstripe.models import Invoice

    from billing.services import user_plan_sync
    from tests.billing.test_webhooks import fake_stripe_invoice

    end = now_ts() + 86400 * 20
    subscription = fake_stripe.subscription(customer=customer.id, price=pro_prices[0], start=end - 86400 * 30, end=end)
    user_plan_sync(user=user, subscription_id=subscription["id"])
    invoice = fake_stripe_invoice(customer.id, subscription["id"])
    invoice.update(status="paid", number="AIS-0001", total=2000, hosted_invoice_url="https://invoice.stripe.com/i/1")
    fake_stripe.put(invoice)
    Invoice.sync_from_stripe_data(Invoice(id=invoice["id"]).api_retrieve())  # as invoice.* webhooks do
    client.force_login(user)

    page = client.get(reverse("billing:overview")).content.decode()

    assert "<strong>Pro</strong>" in page and "Active" in page and "Renews on" in page
    assert "Manage subscription" in page
    assert "AIS-0001" in page and "20.00 USD" in page and "https://invoice.stripe.com/i/1" in page
    assert "tokens used this period" in page


def test_the_portal_button_opens_a_stripe_portal_session_for_the_user(client, user, fake_stripe, customer):
    client.force_login(user)

    response = client.post(reverse("billing:portal"))

    assert response.status_code == 302 and response["Location"].startswith("https://billing.stripe.com/p/session/")
    [session] = fake_stripe.of_type("billing_portal.session")
    assert session["customer"] == customer.id
    assert session["return_url"].endswith(reverse("billing:overview"))


def test_the_portal_without_a_customer_explains(client, user, fake_stripe):
    client.force_login(user)

    response = client.post(reverse("billing:portal"), follow=True)

    assert "choose a plan first" in response.content.decode()


def test_without_stripe_keys_the_pages_say_billing_is_not_configured_and_nothing_calls_stripe(client, user, settings):
    settings.STRIPE_TEST_SECRET_KEY = ""
    settings.STRIPE_LIVE_SECRET_KEY = ""
    client.force_login(user)

    pricing = client.get(reverse("billing:pricing")).content.decode()
    billing = client.get(reverse("billing:overview")).content.decode()
    checkout = client.post(reverse("billing:checkout", args=["pro"]), follow=True).content.decode()

    assert "Billing is not configured" in pricing and "Billing is not configured" in billing
    assert "Billing is not configured" in checkout
    assert UserPlan.objects.get(user=user).plan == Plan.objects.get(is_default=True)


def test_billing_pages_need_a_login(client):
    for name in ("billing:overview", "billing:checkout_success"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]

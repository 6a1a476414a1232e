"""billing_sync_plans against the fake Stripe: products, prices and the meter, idempotently."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from usage.models import Plan

pytestmark = pytest.mark.django_db


def test_it_creates_the_product_prices_and_meter_for_sold_plans(fake_stripe):
    call_command("billing_sync_plans")

    [meter] = fake_stripe.of_type("billing.meter")
    assert meter["event_name"] == "aisaas_tokens"
    prices = {p["lookup_key"]: p for p in fake_stripe.of_type("price")}
    monthly, tokens = prices["aisaas_pro_monthly"], prices["aisaas_pro_monthly_tokens"]
    assert monthly["product"] == tokens["product"] == "aisaas_pro"
    assert (monthly["unit_amount"], monthly["recurring"]["usage_type"]) == (2000, "licensed")
    # $2.00 per million tokens = 0.0002 cents a token, on the meter.
    assert Decimal(tokens["unit_amount_decimal"]) == Decimal("0.0002")
    assert (tokens["recurring"]["usage_type"], tokens["recurring"]["meter"]) == ("metered", meter["id"])
    assert [p["id"] for p in fake_stripe.of_type("product")] == ["aisaas_pro"]  # free is not sold


def test_running_it_again_changes_nothing_and_a_new_price_takes_over_the_lookup_key(fake_stripe):
    call_command("billing_sync_plans")
    call_command("billing_sync_plans")
    assert len(fake_stripe.of_type("price")) == 2 and len(fake_stripe.of_type("billing.meter")) == 1

    Plan.objects.filter(slug="pro").update(price_usd_per_month=Decimal("25.00"))
    call_command("billing_sync_plans")

    current = [p for p in fake_stripe.of_type("price") if p["lookup_key"] == "aisaas_pro_monthly"]
    assert [p["unit_amount"] for p in current] == [2500]


def test_it_refuses_to_run_without_a_key(settings):
    settings.STRIPE_TEST_SECRET_KEY = ""
    with pytest.raises(CommandError, match="No Stripe secret key"):
        call_command("billing_sync_plans")

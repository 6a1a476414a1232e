"""Create or update, in the Stripe account of the configured key, what our sold plans need: a product per
plan, its monthly price (lookup key = Plan.stripe_lookup_key), the billing meter, and for metered plans a
per-token price on that meter. Idempotent: run it after every plan change. Never run by the test suite
against the network (tests point it at the fake Stripe). Then `manage.py djstripe_sync_models Product Price`
copies them into dj-stripe's tables."""

from decimal import Decimal

import stripe
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.stripe_api import billing_enabled, client, metered_lookup_key
from usage.models import Plan


class Command(BaseCommand):
    help = "Create or update the Stripe products, prices and billing meter for the sold plans (idempotent)."

    def handle(self, *args, **options):
        if not billing_enabled():
            raise CommandError("No Stripe secret key is configured (STRIPE_TEST_SECRET_KEY or STRIPE_LIVE_SECRET_KEY).")
        api = client()
        meter = self.meter(api)
        for plan in Plan.objects.exclude(stripe_lookup_key=""):
            product_id = f"aisaas_{plan.slug}"
            try:
                api.v1.products.retrieve(product_id)
                api.v1.products.update(product_id, {"name": plan.name, "metadata": {"plan": plan.slug}})
            except stripe.InvalidRequestError as error:
                if error.code != "resource_missing":
                    raise
                api.v1.products.create({"id": product_id, "name": plan.name, "metadata": {"plan": plan.slug}})
            self.price(
                api,
                product_id=product_id,
                lookup_key=plan.stripe_lookup_key,
                params={"unit_amount": int(plan.price_usd_per_month * 100), "recurring": {"interval": "month"}},
                nickname=f"{plan.name} monthly",
            )
            if plan.metered_after is not None:
                per_token_cents = plan.metered_usd_per_1m_tokens * 100 / Decimal(1_000_000)
                self.price(
                    api,
                    product_id=product_id,
                    lookup_key=metered_lookup_key(plan.stripe_lookup_key),
                    params={
                        "unit_amount_decimal": f"{per_token_cents.normalize():f}",
                        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter},
                    },
                    nickname=f"{plan.name} tokens",
                )
        self.stdout.write(self.style.SUCCESS("Stripe products, prices and meter are up to date."))

    def meter(self, api) -> str:
        event_name = settings.STRIPE_METER_EVENT_NAME
        for meter in api.v1.billing.meters.list({"limit": 100}).data:
            if meter["event_name"] == event_name:
                return meter["id"]
        created = api.v1.billing.meters.create(
            {
                "display_name": "AI tokens",
                "event_name": event_name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
                "value_settings": {"event_payload_key": "value"},
            }
        )
        self.stdout.write(f"Created billing meter {created['id']} for event {event_name}")
        return created["id"]

    def price(self, api, *, product_id: str, lookup_key: str, params: dict, nickname: str) -> None:
        """Prices cannot change amount: when the plan's price changed, a new price takes over the lookup key
        (existing subscriptions keep theirs until moved in the portal)."""
        existing = api.v1.prices.list({"lookup_keys": [lookup_key], "active": True}).data
        wanted_amount = params.get("unit_amount")
        wanted_decimal = params.get("unit_amount_decimal")
        for price in existing:
            same_amount = (
                price["unit_amount"] == wanted_amount
                if wanted_amount is not None
                else Decimal(str(price["unit_amount_decimal"])) == Decimal(wanted_decimal)
            )
            if price["product"] == product_id and same_amount:
                return
        api.v1.prices.create(
            {
                "product": product_id,
                "currency": "usd",
                "lookup_key": lookup_key,
                "transfer_lookup_key": True,
                "nickname": nickname,
                **params,
            }
        )
        self.stdout.write(f"Created price {lookup_key} for {product_id}")

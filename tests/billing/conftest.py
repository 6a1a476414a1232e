import json
import time
import uuid

import pytest
import stripe
from djstripe.models import Customer, WebhookEndpoint

from tests.fake_stripe import SECRET_KEY, WEBHOOK_SECRET, FakeStripe, sign
from usage.models import Plan


@pytest.fixture
def fake_stripe(settings):
    """Stripe's API as a local server; the real stripe-python and dj-stripe code talk to it."""
    fake = FakeStripe().start()
    settings.STRIPE_TEST_SECRET_KEY = SECRET_KEY
    settings.STRIPE_LIVE_MODE = False
    previous, stripe.api_base = stripe.api_base, fake.url
    yield fake
    stripe.api_base = previous
    fake.stop()


@pytest.fixture
def webhook_endpoint(db):
    """The endpoint dj-stripe's admin creates on Stripe: its uuid is in the URL, its secret signs deliveries."""
    return WebhookEndpoint.objects.create(
        id=f"we_{uuid.uuid4().hex[:16]}",
        livemode=False,
        api_version=stripe.api_version,
        enabled_events=["*"],
        secret=WEBHOOK_SECRET,
        status="enabled",
        url="https://aisaas.example/stripe/webhook/",
    )


@pytest.fixture
def deliver(client, webhook_endpoint):
    """POST an event to our webhook URL as Stripe does: the raw JSON body, signed with the endpoint secret."""

    def post(event: dict | str, *, signature: str | None = None, secret: str = WEBHOOK_SECRET, http=None):
        body = event if isinstance(event, str) else json.dumps(event)
        headers = {} if signature == "" else {"HTTP_STRIPE_SIGNATURE": signature or sign(body, secret)}
        return (http or client).post(
            f"/stripe/webhook/{webhook_endpoint.djstripe_uuid}/", body, content_type="application/json", **headers
        )

    return post


@pytest.fixture
def pro_prices(fake_stripe):
    """Pro's prices on Stripe, as billing_sync_plans leaves them."""
    pro = Plan.objects.get(slug="pro")
    product = fake_stripe.product("aisaas_pro", name="Pro")
    monthly = fake_stripe.price(product=product, lookup_key=pro.stripe_lookup_key, unit_amount=2000)
    tokens = fake_stripe.price(product=product, lookup_key=f"{pro.stripe_lookup_key}_tokens", unit_amount=0)
    tokens["recurring"].update(usage_type="metered", meter="mtr_test")
    return monthly, tokens


@pytest.fixture
def customer(fake_stripe, user):
    """The user's Stripe customer, created through dj-stripe as Checkout does."""
    return Customer.get_or_create(subscriber=user)[0]


def now_ts() -> int:
    return int(time.time())

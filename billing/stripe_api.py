"""Our own calls to Stripe (Checkout, the billing portal, meter events, plan sync). dj-stripe makes its own
with the same key and API version; both follow `stripe.api_base` (STRIPE_API_HOST, for a local fake)."""

import stripe
from django.conf import settings
from djstripe.settings import djstripe_settings


def billing_enabled() -> bool:
    """Billing is on when a Stripe secret key is configured; without one everyone stays on the free plan."""
    return bool(djstripe_settings.STRIPE_SECRET_KEY)


def client(*, max_network_retries: int = 2) -> stripe.StripeClient:
    return stripe.StripeClient(
        djstripe_settings.STRIPE_SECRET_KEY,
        stripe_version=settings.STRIPE_API_VERSION,
        base_addresses={"api": stripe.api_base},
        max_network_retries=max_network_retries,
    )


def metered_lookup_key(plan_lookup_key: str) -> str:
    """The lookup key of a plan's per-token price, next to its monthly one."""
    return f"{plan_lookup_key}_tokens"

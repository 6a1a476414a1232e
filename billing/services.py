"""Billing: subscriptions (Checkout, the portal) and what they mean for a user's plan.

Webhook handlers never trust an event's payload or delivery order (I4): they read the subscription as Stripe
has it now, under a lock on the user's plan row, and derive the plan from that. Replays, duplicates and
events out of order therefore all end in the state Stripe reports.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import stripe
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from djstripe.models import Customer, Subscription, WebhookEventTrigger

from billing.stripe_api import client, metered_lookup_key
from usage.models import Plan, QuotaPeriod, UserPlan
from usage.selectors import default_plan
from usage.services import plan_change, user_plan_create

logger = logging.getLogger(__name__)

# Statuses that keep a paid plan; past_due keeps it for BILLING_PAST_DUE_GRACE_DAYS.
PAID_STATUSES = {"active", "trialing"}


class BillingError(Exception):
    """Something the user can be told plainly (the message is safe to show)."""


def customer_for(*, user) -> Customer:
    """The user's Stripe customer, created on first use (dj-stripe links it to the user)."""
    customer, _ = Customer.get_or_create(subscriber=user)
    return customer


def subscription_current(*, user) -> Subscription | None:
    """The user's subscription that counts: a paid or past_due one if any, else the latest."""
    subscriptions = list(Subscription.objects.filter(customer__subscriber=user).order_by("-created", "-djstripe_id"))
    for subscription in subscriptions:
        if subscription.status in PAID_STATUSES | {"past_due"}:
            return subscription
    return subscriptions[0] if subscriptions else None


def checkout_start(*, user, plan: Plan, success_url: str, cancel_url: str) -> str:
    """Start a Stripe Checkout Session (subscription mode) for `plan`; returns the URL to send the user to.
    The plan is applied when Stripe confirms the subscription (webhook), never from the redirect."""
    if not plan.is_sold:
        raise BillingError("This plan cannot be bought.")
    current = subscription_current(user=user)
    if current is not None and current.status in PAID_STATUSES | {"past_due"}:
        raise BillingError("You already have a subscription: change it from the billing page.")
    api = client()
    keys = [plan.stripe_lookup_key, metered_lookup_key(plan.stripe_lookup_key)]
    prices = {price["lookup_key"]: price for price in api.v1.prices.list({"lookup_keys": keys, "active": True}).data}
    if plan.stripe_lookup_key not in prices:
        logger.error("No active Stripe price with lookup key %s: run billing_sync_plans", plan.stripe_lookup_key)
        raise BillingError("This plan is not available right now. Please try again later.")
    line_items = [{"price": prices[plan.stripe_lookup_key]["id"], "quantity": 1}]
    if plan.metered_after is not None and keys[1] in prices:
        line_items.append({"price": prices[keys[1]]["id"]})  # metered: no quantity
    session = api.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer_for(user=user).id,
            "client_reference_id": str(user.pk),
            "line_items": line_items,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": {"plan": plan.slug},
            "subscription_data": {"metadata": {"plan": plan.slug}},
        }
    )
    return session["url"]


def portal_url(*, user, return_url: str) -> str:
    """A Stripe billing portal session for the user (change plan, payment method, cancel)."""
    customer = Customer.objects.filter(subscriber=user).first()
    if customer is None:
        raise BillingError("You have no billing account yet: choose a plan first.")
    session = client().v1.billing_portal.sessions.create({"customer": customer.id, "return_url": return_url})
    return session["url"]


@dataclass(frozen=True)
class SubscriptionTerms:
    """What a subscription means for its user right now."""

    plan: Plan | None  # None: no paid plan (canceled, unpaid, past_due beyond the grace period, ...)
    period_start: datetime | None
    period_end: datetime | None
    status: str = ""
    cancel_at_period_end: bool = False

    @property
    def status_label(self) -> str:
        return self.status.replace("_", " ").capitalize()


def subscription_terms(subscription: Subscription, *, now: datetime | None = None) -> SubscriptionTerms:
    data = subscription.stripe_data
    items = data.get("items", {}).get("data", [])
    lookup_keys = [(item.get("price") or {}).get("lookup_key") for item in items]
    plan = Plan.objects.filter(stripe_lookup_key__in=[key for key in lookup_keys if key]).first()
    # Since the 2025 API versions the current period lives on the subscription's items.
    source = items[0] if items and items[0].get("current_period_start") else data
    start, end = source.get("current_period_start"), source.get("current_period_end")
    period_start = datetime.fromtimestamp(start, UTC) if start else None
    period_end = datetime.fromtimestamp(end, UTC) if end else None
    now = now or timezone.now()
    status = data.get("status") or subscription.status
    paid = status in PAID_STATUSES or (
        status == "past_due"
        and period_start is not None
        and now < period_start + timedelta(days=settings.BILLING_PAST_DUE_GRACE_DAYS)
    )
    return SubscriptionTerms(
        plan if paid else None, period_start, period_end, status, bool(data.get("cancel_at_period_end"))
    )


def subscription_refresh(subscription_id: str) -> Subscription:
    """The subscription as Stripe has it now, saved locally."""
    data = Subscription(id=subscription_id).api_retrieve()
    return Subscription.sync_from_stripe_data(data)


@transaction.atomic
def user_plan_sync(*, user, subscription_id: str | None = None) -> UserPlan:
    """Put the user on the plan their subscriptions pay for now (or the default plan), with periods aligned
    to the subscription. Serialised per user (the plan row is locked), and `subscription_id` is re-read
    from Stripe after the lock is taken, so the last one to run applies Stripe's latest state."""
    user_plan_create(user=user)  # every user has one; this only guards accounts from before plans existed
    user_plan = UserPlan.objects.select_for_update().select_related("plan").get(user=user)
    if subscription_id:
        subscription_refresh(subscription_id)
    current = subscription_current(user=user)
    terms = subscription_terms(current) if current else SubscriptionTerms(None, None, None)
    if terms.plan is not None:
        cycle = (terms.period_start, terms.period_end) if terms.period_start and terms.period_end else None
        if (user_plan.plan_id, user_plan.cycle_anchor) == (terms.plan.pk, cycle and cycle[0]) and _period_matches(
            user, cycle
        ):
            return user_plan
        return plan_change(user=user, plan=terms.plan, billing_cycle=cycle)
    if user_plan.plan.is_sold or user_plan.cycle_anchor is not None:
        # The paid plan is over: the default plan, on calendar months once this period ends.
        return plan_change(user=user, plan=default_plan(), billing_cycle=None)
    return user_plan  # never paid (or on a plan staff granted): nothing to change


def _period_matches(user, cycle) -> bool:
    return cycle is None or QuotaPeriod.objects.filter(user=user, start=cycle[0], end=cycle[1]).exists()


def user_for_customer(customer_id: str):
    customer = Customer.objects.filter(id=customer_id).select_related("subscriber").first()
    return customer.subscriber if customer else None


def past_due_grace_enforce(*, now: datetime | None = None) -> int:
    """Move users whose subscription stayed past_due beyond the grace period to the default plan (no webhook
    says so: the grace period is ours). Returns how many changed."""
    changed = 0
    past_due = Subscription.objects.filter(stripe_data__status="past_due").select_related("customer__subscriber")
    for subscription in past_due:
        user = subscription.customer.subscriber if subscription.customer else None
        if user is None or subscription_terms(subscription, now=now).plan is not None:
            continue
        before = UserPlan.objects.get(user=user).plan_id
        if user_plan_sync(user=user).plan_id != before:
            changed += 1
            logger.info(
                "Subscription %s past due beyond the grace period: user %s moved to the default plan",
                subscription.id,
                user.pk,
            )
    return changed


def webhook_events_purge(*, now: datetime | None = None) -> int:
    """Delete the raw webhook deliveries (dj-stripe's WebhookEventTrigger: headers and body as Stripe sent them)
    older than BILLING_WEBHOOK_RETENTION_DAYS: kept that long so staff can look into or reprocess one. What the
    events did (subscriptions, plans, the Event rows) stays. Safe to run twice."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.BILLING_WEBHOOK_RETENTION_DAYS)
    deleted, _ = WebhookEventTrigger.objects.filter(created__lt=cutoff).delete()
    return deleted


def stripe_error_message(error: stripe.StripeError) -> str:
    """What we log of a Stripe error: its type and code, never the request (it may carry keys)."""
    return f"{type(error).__name__} {getattr(error, 'code', '') or ''} {getattr(error, 'http_status', '') or ''}"

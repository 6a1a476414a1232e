"""Stripe webhooks, through dj-stripe's view (signature checked on the raw body, each event processed once:
its Event row is unique) and its signals. dj-stripe's own receivers sync the object first (they connect
first: djstripe comes before billing in INSTALLED_APPS); ours then apply what it means. Thin: the logic
is in billing.services."""

import logging

from django.db import transaction
from djstripe.event_handlers import djstripe_receiver

from billing import services, tasks

logger = logging.getLogger(__name__)

SUBSCRIPTION_EVENTS = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "customer.subscription.trial_will_end",
]


def _user_of(event):
    user = services.user_for_customer(event.data["object"].get("customer") or "")
    if user is None:
        logger.warning("Stripe event %s (%s) for a customer with no user: ignored", event.id, event.type)
    return user


@djstripe_receiver(SUBSCRIPTION_EVENTS)
def subscription_changed(sender, event, **kwargs):
    user = _user_of(event)
    if user is not None:
        services.user_plan_sync(user=user, subscription_id=event.data["object"]["id"])


@djstripe_receiver("customer.subscription.trial_will_end")
def trial_will_end(sender, event, **kwargs):
    user = _user_of(event)
    if user is not None:
        trial_end = event.data["object"].get("trial_end")
        transaction.on_commit(lambda: tasks.notify_trial_ending.delay(user_id=user.pk, trial_end=trial_end))


@djstripe_receiver("invoice.payment_failed")
def invoice_payment_failed(sender, event, **kwargs):
    user = _user_of(event)
    if user is not None:
        invoice_url = event.data["object"].get("hosted_invoice_url") or ""
        transaction.on_commit(lambda: tasks.notify_payment_failed.delay(user_id=user.pk, invoice_url=invoice_url))

"""Pricing, Checkout, the billing page and the portal. Thin: billing.services does the work."""

import logging

import stripe
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from djstripe.models import WebhookEndpoint, WebhookEventTrigger
from djstripe.settings import djstripe_settings
from djstripe.views import ProcessWebhookView

from billing import selectors as billing_selectors
from billing import services
from billing.stripe_api import billing_enabled
from usage import selectors
from usage.models import Plan

logger = logging.getLogger(__name__)

STRIPE_UNAVAILABLE = "Billing is unavailable right now. Please try again in a few minutes."


def pricing(request):
    """Public: every plan, what it allows and costs; the visitor's current plan marked."""
    current = selectors.plan_for(user=request.user) if request.user.is_authenticated else None
    return render(
        request,
        "billing/pricing.html",
        {"plans": Plan.objects.all(), "current_plan": current, "billing_enabled": billing_enabled()},
    )


def _to_stripe(request, open_page, *, back_to: str, refused_to: str, what: str):
    """Send the user to the Stripe page `open_page()` returns the URL of, or `back_to` with a message saying
    why not (billing off, Stripe unreachable); a refusal of ours (BillingError) goes to `refused_to`."""
    if not billing_enabled():
        messages.error(request, "Billing is not configured on this server.")
        return redirect(back_to)
    try:
        url = open_page()
    except services.BillingError as error:
        messages.error(request, str(error))
        return redirect(refused_to)
    except stripe.StripeError as error:
        logger.error("%s failed: %s", what, services.stripe_error_message(error))
        messages.error(request, STRIPE_UNAVAILABLE)
        return redirect(back_to)
    return redirect(url)


@login_required
@require_POST
def checkout(request, slug):
    plan = get_object_or_404(Plan, slug=slug)
    return _to_stripe(
        request,
        lambda: services.checkout_start(
            user=request.user,
            plan=plan,
            success_url=request.build_absolute_uri(reverse("billing:checkout_success")),
            cancel_url=request.build_absolute_uri(reverse("billing:checkout_cancel")),
        ),
        back_to="billing:pricing",
        refused_to="billing:overview",
        what="Checkout",
    )


@login_required
def checkout_success(request):
    # The redirect alone proves nothing: the plan changes when Stripe's webhook confirms the subscription.
    return render(request, "billing/checkout_done.html", {"succeeded": True})


@login_required
def checkout_cancel(request):
    return render(request, "billing/checkout_done.html", {"succeeded": False})


@login_required
def billing_overview(request):
    """The user's plan, subscription status, renewal or end, usage this period, invoices, the portal."""
    plan, period = selectors.plan_and_period(user=request.user)
    enabled = billing_enabled()
    subscription = services.subscription_current(user=request.user) if enabled else None
    terms = services.subscription_terms(subscription) if subscription else None
    invoices = billing_selectors.invoices_for(user=request.user) if enabled else []
    return render(
        request,
        "billing/overview.html",
        {
            "billing_enabled": enabled,
            "plan": plan,
            "meter": selectors.quota_meter(period=period),
            "period": period,
            "subscription": subscription,
            "terms": terms,
            "invoices": invoices,
        },
    )


@login_required
@require_POST
def portal(request):
    return_url = request.build_absolute_uri(reverse("billing:overview"))
    return _to_stripe(
        request,
        lambda: services.portal_url(user=request.user, return_url=return_url),
        back_to="billing:overview",
        refused_to="billing:pricing",
        what="Billing portal",
    )


class StripeWebhookView(ProcessWebhookView):
    """dj-stripe's webhook view (signature on the raw body, each event processed once), which stores every
    delivery it is given, refused or not: an unauthenticated write. Here a delivery is checked first, by
    dj-stripe's own validation on a trigger that is not saved, and one that does not pass (a wrong secret, a
    tampered body, a stale timestamp, a garbage header, a body that is not an event) is answered 400 with
    nothing stored."""

    def post(self, request, uuid):
        endpoint = get_object_or_404(WebhookEndpoint, djstripe_uuid=uuid)
        unsaved = WebhookEventTrigger(
            headers=dict(request.headers), body=request.body.decode(errors="replace"), webhook_endpoint=endpoint
        )
        account = endpoint.djstripe_owner_account
        api_key = (account.default_api_key if account else None) or djstripe_settings.get_default_api_key(
            endpoint.livemode
        )  # as dj-stripe's own view finds it
        if not unsaved.validate(api_key=api_key, secret=endpoint.secret):
            logger.warning("Refused a Stripe webhook delivery to endpoint %s: it did not validate", endpoint.id)
            return HttpResponseBadRequest()
        return super().post(request, uuid)

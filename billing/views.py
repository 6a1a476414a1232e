"""Pricing, Checkout, the billing page and the portal. Thin: billing.services does the work."""

import logging

import stripe
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

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


@login_required
@require_POST
def checkout(request, slug):
    plan = get_object_or_404(Plan, slug=slug)
    if not billing_enabled():
        messages.error(request, "Billing is not configured on this server.")
        return redirect("billing:pricing")
    try:
        url = services.checkout_start(
            user=request.user,
            plan=plan,
            success_url=request.build_absolute_uri(reverse("billing:checkout_success")),
            cancel_url=request.build_absolute_uri(reverse("billing:checkout_cancel")),
        )
    except services.BillingError as error:
        messages.error(request, str(error))
        return redirect("billing:overview")
    except stripe.StripeError as error:
        logger.error("Checkout could not start: %s", services.stripe_error_message(error))
        messages.error(request, STRIPE_UNAVAILABLE)
        return redirect("billing:pricing")
    return redirect(url)


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
    if not billing_enabled():
        messages.error(request, "Billing is not configured on this server.")
        return redirect("billing:overview")
    try:
        url = services.portal_url(user=request.user, return_url=request.build_absolute_uri(reverse("billing:overview")))
    except services.BillingError as error:
        messages.error(request, str(error))
        return redirect("billing:pricing")
    except stripe.StripeError as error:
        logger.error("Billing portal could not open: %s", services.stripe_error_message(error))
        messages.error(request, STRIPE_UNAVAILABLE)
        return redirect("billing:overview")
    return redirect(url)

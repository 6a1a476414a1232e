"""Staff pages in the admin: token analytics, one user's analytics, and the audited account actions. They show
what several apps know (usage, the chat's feedback, billing's subscription), so they live above them all. Thin:
the reads are usage.analytics and chat.analytics, the writes usage.services.accounts."""

import csv
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing.services import subscription_current
from billing.stripe_api import billing_enabled
from chat import analytics as chat_analytics
from core.errors import InvalidInput
from usage import analytics, services
from usage.models import AccountAction, Plan


def token_analytics(request, *, admin_site):
    scope, problems = analytics.Scope.from_query(request.GET)
    for problem in problems:
        messages.warning(request, problem)
    page = {"scope": scope, **analytics.overview(scope)}
    heaviest = page["heaviest"]
    page.update(
        charts=analytics.day_charts(page["days"]),
        satisfaction=chat_analytics.satisfaction_by_model(scope),
        satisfaction_by_user=chat_analytics.satisfaction_by_user(scope, [row["user_id"] for row in heaviest]),
    )
    if request.GET.get("format") == "csv":
        return _csv(page)
    for row in heaviest:
        row["feedback"] = page["satisfaction_by_user"].get(row["user_id"])
    return TemplateResponse(
        request,
        "admin/usage/token_analytics.html",
        {
            **admin_site.each_context(request),
            **page,
            "title": "Token analytics",
            "plans": Plan.objects.all(),
            "model_choices": analytics.models_in_use(),
            "csv_query": _with(request.GET, format="csv"),
        },
    )


def _with(query, **changes) -> str:
    query = query.copy()
    for name, value in changes.items():
        query[name] = value
    return query.urlencode()


def _csv(page) -> HttpResponse:
    """What the page shows, as CSV: one section per table."""
    scope = page["scope"]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="token-analytics-{scope.first_day}-{scope.last_day}.csv"'
    out = csv.writer(response)
    out.writerow(["section", "key", "requests", "prompt_tokens", "completion_tokens", "tokens", "cost_usd", "extra"])
    t = page["totals"]
    out.writerow(["total", f"{scope.first_day}..{scope.last_day}", t["requests"], t["prompt_tokens"],
                  t["completion_tokens"], t["tokens"], t["cost"],
                  f"active_users={t['active_users']};cache_hit_rate={t['cache_hit_rate']:.4f};"
                  f"moderation_refusals={t['moderation_refusals']}"])  # fmt: skip
    for d in page["days"]:
        out.writerow(["day", d["day"].isoformat(), d["requests"], "", "", d["tokens"], d["cost"], ""])
    for m in page["models"]:
        out.writerow(["model", m["model"], m["requests"], m["prompt_tokens"], m["completion_tokens"], m["tokens"],
                      m["cost"], ""])  # fmt: skip
    for u in page["heaviest"]:
        out.writerow(["user", u["email"], u["requests"], u["prompt_tokens"], u["completion_tokens"], u["tokens"],
                      u["cost"], f"plan={u['plan']};share={u['share']:.4f}"])  # fmt: skip
    return response


def user_analytics(request, user_id: int):
    user = get_object_or_404(get_user_model(), pk=user_id)
    today = timezone.now().date()
    overview = analytics.user_overview(user, first_day=today - timedelta(days=29), last_day=today)
    return TemplateResponse(
        request,
        "admin/usage/user_analytics.html",
        {
            **admin.site.each_context(request),
            **overview,
            **chat_analytics.feedback_overview(user),
            "title": f"Token analytics: {user.email}",
            "subject": user,
            "subscription": _subscription_status(user),
            "actions": AccountAction.objects.filter(user=user).select_related("actor").order_by("-created_at")[:20],
            "form": AccountActionForm(),
            "may_change_money": request.user.is_superuser,
        },
    )


def _subscription_status(user) -> str:
    if not billing_enabled():
        return "billing not configured"
    subscription = subscription_current(user=user)
    return subscription.status if subscription else "none"


class AccountActionForm(forms.Form):
    kind = forms.ChoiceField(choices=AccountAction.Kind.choices)
    tokens = forms.IntegerField(min_value=1, required=False, help_text="Bonus tokens: how many.")
    plan = forms.ModelChoiceField(queryset=Plan.objects.all(), required=False, help_text="Change plan: to which.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000, help_text="Recorded.")

    MONEY = {AccountAction.Kind.BONUS_TOKENS, AccountAction.Kind.PERIOD_RESET, AccountAction.Kind.PLAN_CHANGE}

    def clean(self):
        data = super().clean()
        if data.get("kind") == AccountAction.Kind.BONUS_TOKENS and not data.get("tokens"):
            self.add_error("tokens", "How many bonus tokens?")
        if data.get("kind") == AccountAction.Kind.PLAN_CHANGE and not data.get("plan"):
            self.add_error("plan", "Which plan?")
        return data


@require_POST
def user_action(request, user_id: int):
    user = get_object_or_404(get_user_model(), pk=user_id)
    form = AccountActionForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return redirect("admin:usage_user_analytics", user_id=user.pk)
    kind, reason = form.cleaned_data["kind"], form.cleaned_data["reason"]
    if kind in AccountActionForm.MONEY and not request.user.is_superuser:
        raise PermissionDenied("Only superusers change what an account may spend.")
    try:
        services.account_action(
            actor=request.user,
            user=user,
            kind=kind,
            reason=reason,
            tokens=form.cleaned_data["tokens"],
            plan=form.cleaned_data["plan"],
        )
    except InvalidInput as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{AccountAction.Kind(kind).label}: done and recorded.")
    return redirect("admin:usage_user_analytics", user_id=user.pk)

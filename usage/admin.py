from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import F, FilteredRelation, OuterRef, Q, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from usage.models import (
    AccountAction,
    ModerationEvent,
    Plan,
    QuotaPeriod,
    SpendControl,
    SpendDay,
    UsageRecord,
    UserPlan,
)
from users.admin import UserAdmin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the gate: staff read them, nobody edits them by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "monthly_token_allowance",
        "requests_per_minute",
        "requests_per_day",
        "tokens_per_day",
        "max_tokens_per_request",
        "price_usd_per_month",
        "metering",
        "stripe_lookup_key",
        "is_default",
    ]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(UserPlan)
class UserPlanAdmin(ReadOnlyAdmin):
    """Plans are changed from a user's analytics page (audited, with a reason), or by billing."""

    list_display = ["user", "plan", "changed_at", "cycle_anchor", "suspended_at"]
    list_filter = ["plan"]
    list_select_related = ["user", "plan"]
    search_fields = ["user__email"]


@admin.register(QuotaPeriod)
class QuotaPeriodAdmin(ReadOnlyAdmin):
    list_display = ["user", "start", "end", "allowance", "used", "reserved", "metered_after"]
    list_select_related = ["user"]
    search_fields = ["user__email"]
    date_hierarchy = "start"


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "user",
        "source",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "billable_tokens",
        "cost",
        "cached",
        "latency_ms",
    ]
    list_filter = ["source", "model", "status", "cached"]
    list_select_related = ["user"]
    search_fields = ["user__email", "request_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False  # no COUNT(*) over millions of rows on every page


@admin.register(SpendDay)
class SpendDayAdmin(ReadOnlyAdmin):
    list_display = ["day", "cost", "requests"]
    date_hierarchy = "day"


@admin.register(SpendControl)
class SpendControlAdmin(admin.ModelAdmin):
    list_display = ["__str__", "daily_cap_usd", "monthly_cap_usd", "kill_switch", "updated_at"]

    def has_add_permission(self, request):
        return request.user.is_superuser and not SpendControl.objects.exists()  # one row

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser  # it changes what the company may spend

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(ModerationEvent)
class ModerationEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user", "source", "categories"]
    list_filter = ["source"]
    list_select_related = ["user"]
    search_fields = ["user__email", "content"]
    date_hierarchy = "created_at"


@admin.register(AccountAction)
class AccountActionAdmin(ReadOnlyAdmin):
    """The audit trail of staff actions on accounts."""

    list_display = ["created_at", "user", "kind", "actor", "reason"]
    list_filter = ["kind"]
    list_select_related = ["user", "actor"]
    search_fields = ["user__email", "actor__email", "reason"]
    date_hierarchy = "created_at"


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class UserWithUsageAdmin(UserAdmin):
    """The user list with each user's plan, tokens and cost this period and last activity (sortable), read
    with the page's one query; and a link to the user's analytics."""

    # Short columns, so that the list and its filters fit a 1440 px screen without scrolling sideways (staff and
    # superusers are a filter, not a column).
    list_display = [
        "email",
        "plan",
        "tokens_this_period",
        "cost_this_period",
        "last_active",
        "analytics",
        "is_active",
        "joined",
    ]
    list_select_related = ["user_plan__plan"]

    def get_queryset(self, request):
        return annotate_usage(super().get_queryset(request))

    @admin.display(description="Plan", ordering="user_plan__plan__name")
    def plan(self, user):
        user_plan = getattr(user, "user_plan", None)
        return user_plan.plan.name if user_plan else "-"

    @admin.display(description="Tokens (period)", ordering="tokens_this_period")
    def tokens_this_period(self, user):
        return f"{user.tokens_this_period:,}" if user.tokens_this_period is not None else "0"

    @admin.display(description="Cost (period, USD)", ordering="cost_this_period")
    def cost_this_period(self, user):
        return f"{user.cost_this_period:.4f}" if user.cost_this_period is not None else "0.0000"

    @admin.display(description="Last active", ordering="last_active")
    def last_active(self, user):
        return timezone.localtime(user.last_active).strftime("%Y-%m-%d %H:%M") if user.last_active else "-"

    @admin.display(description="Joined", ordering="date_joined")
    def joined(self, user):
        return timezone.localtime(user.date_joined).strftime("%Y-%m-%d")

    @admin.display(description="Analytics")
    def analytics(self, user):
        return format_html('<a href="{}">Token analytics</a>', reverse("admin:usage_user_analytics", args=[user.pk]))


def annotate_usage(users):
    """Per user: tokens used and cost in the current period (kept on the period by settlement; joined, so
    sorting all users by them is one pass), and the time of the last request (a correlated subquery on the
    (user, created_at) index): a page of users is one query."""
    now = timezone.now()
    last = UsageRecord.objects.filter(user=OuterRef("pk")).order_by("-created_at").values("created_at")[:1]
    return users.annotate(
        current_period=FilteredRelation(
            "quota_periods", condition=Q(quota_periods__start__lte=now, quota_periods__end__gt=now)
        ),
        tokens_this_period=F("current_period__used"),
        cost_this_period=F("current_period__cost"),
        last_active=Subquery(last),
    )

from django.contrib import admin

from usage import services
from usage.models import ModerationEvent, Plan, QuotaPeriod, SpendControl, SpendDay, UsageRecord, UserPlan


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
class UserPlanAdmin(admin.ModelAdmin):
    list_display = ["user", "plan", "changed_at", "cycle_anchor"]
    list_filter = ["plan"]
    list_select_related = ["user", "plan"]
    search_fields = ["user__email"]
    autocomplete_fields = ["user"]
    readonly_fields = ["changed_at", "cycle_anchor"]

    def save_model(self, request, obj, form, change):
        # Through the service, so the current period takes the new allowance at once.
        services.plan_change(user=obj.user, plan=obj.plan)


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

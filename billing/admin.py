from django.contrib import admin

from billing.models import MeterReport
from usage.admin import ReadOnlyAdmin


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdmin):
    """The metering outbox: what was (or is waiting to be) reported to Stripe, and why a report waits."""

    list_display = [
        "identifier",
        "user",
        "stripe_customer_id",
        "value",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "sent_at",
    ]
    list_filter = ["status"]
    list_select_related = ["user"]
    search_fields = ["user__email", "stripe_customer_id", "identifier"]
    date_hierarchy = "created_at"

"""The metering outbox. Everything else billing keeps is dj-stripe's (customers, subscriptions, invoices)."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class MeterReport(models.Model):
    """One Billing Meter event for Stripe: a user's metered tokens of one period, from `covered_from` to
    `covered_to` (the period's running total). Written before it is sent, marked sent only after Stripe
    accepted it; the identifier is derived from what it covers, so a resend can never count twice (I3)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="meter_reports")
    period = models.ForeignKey("usage.QuotaPeriod", on_delete=models.PROTECT, related_name="meter_reports")
    stripe_customer_id = models.CharField(max_length=255)
    identifier = models.CharField(max_length=100, unique=True)
    covered_from = models.PositiveBigIntegerField()
    covered_to = models.PositiveBigIntegerField()
    value = models.PositiveBigIntegerField(help_text="Tokens reported: covered_to - covered_from.")
    timestamp = models.DateTimeField(help_text="The event's time for Stripe: inside the period.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A sender holds the report until then: at most one request in flight for it (and so for its customer).
    lease_until = models.DateTimeField(null=True, blank=True)
    leased_by = models.UUIDField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One unsent report per customer: the next one is made only after it went through.
            models.UniqueConstraint(
                fields=["user"], condition=models.Q(status="pending"), name="one_pending_meter_report_per_user"
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="billing_meter_report_due")]

    def __str__(self):
        return f"{self.identifier}: {self.value} tokens ({self.status})"

"""Plans, quota periods, usage records and the global spend ledger.

Money is Decimal (USD), token counts are integers. Counters are changed only by conditional UPDATEs or F()
increments in usage.services, never read-modify-write in Python.
"""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

USD = {"max_digits": 20, "decimal_places": 10}


class Plan(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    monthly_token_allowance = models.PositiveBigIntegerField(help_text="Tokens (prompt + completion) per period.")
    requests_per_minute = models.PositiveIntegerField()
    requests_per_day = models.PositiveIntegerField()
    tokens_per_day = models.PositiveBigIntegerField()
    allowed_models = models.JSONField(
        default=list, blank=True, help_text='Model ids, e.g. ["demo-mini"]. Empty: every configured model.'
    )
    max_tokens_per_request = models.PositiveIntegerField(help_text="The completion's max_tokens.")
    is_default = models.BooleanField(default=False, help_text="The plan every new user starts on (exactly one).")
    # Selling it (billing): the Stripe prices are created from these by `manage.py billing_sync_plans`.
    price_usd_per_month = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal(0))
    stripe_lookup_key = models.CharField(
        max_length=100,
        blank=True,
        help_text="Lookup key of the plan's monthly Stripe price; a subscription to it puts the user on this "
        "plan. Empty: not sold.",
    )

    class Metering(models.TextChoices):
        NONE = "none", "Not metered"
        OVERAGE = "overage", "Tokens past the allowance"
        ALL = "all", "Every token"

    metering = models.CharField(
        max_length=8,
        choices=Metering.choices,
        default=Metering.NONE,
        help_text="Which tokens are reported to Stripe's meter and billed per token.",
    )
    overage_token_limit = models.PositiveBigIntegerField(
        default=0, help_text="Overage plans: how many tokens past the allowance a period may use (billed)."
    )
    metered_usd_per_1m_tokens = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal(0))

    class Meta:
        ordering = ["monthly_token_allowance"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True), name="one_default_plan")
        ]

    def __str__(self):
        return self.name

    def allows_model(self, model_id: str) -> bool:
        return not self.allowed_models or model_id in self.allowed_models

    @property
    def period_token_limit(self) -> int:
        """The most a period may use: the allowance, plus the billed overage on overage plans."""
        if self.metering == self.Metering.OVERAGE:
            return self.monthly_token_allowance + self.overage_token_limit
        return self.monthly_token_allowance

    @property
    def metered_after(self) -> int | None:
        """Tokens of a period after which usage is billed per token: None, not metered; 0, every token."""
        return {self.Metering.OVERAGE: self.monthly_token_allowance, self.Metering.ALL: 0}.get(self.metering)

    @property
    def is_sold(self) -> bool:
        return bool(self.stripe_lookup_key)


class UserPlan(models.Model):
    """A user's current plan: one row per user, created with the user (usage.signals)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="user_plan"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="user_plans")
    changed_at = models.DateTimeField(default=timezone.now)
    # Paying users' periods follow their subscription: monthly from this moment. Empty: calendar months.
    cycle_anchor = models.DateTimeField(null=True, blank=True)
    # Staff suspended the user's access to paid calls (chat, API): the gate refuses them, saying so.
    suspended_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.user} on {self.plan}"


class QuotaPeriodQuerySet(models.QuerySet):
    def containing(self, moment):
        """The periods running at `moment` (periods are [start, end))."""
        return self.filter(start__lte=moment, end__gt=moment)


class QuotaPeriod(models.Model):
    """A user's token allowance for one period: [start, end). `reserved` covers requests in flight.
    `allowance` is the most the period may use (the plan's period_token_limit)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota_periods")
    start = models.DateTimeField()
    end = models.DateTimeField()
    allowance = models.PositiveBigIntegerField()
    used = models.PositiveBigIntegerField(default=0)
    reserved = models.PositiveBigIntegerField(default=0)
    # What the period's calls cost us (USD), kept by settlement with `used`.
    cost = models.DecimalField(**USD, default=Decimal(0))
    # Tokens staff granted on top of the plan for this period (part of `allowance`; kept across plan changes).
    bonus_tokens = models.PositiveBigIntegerField(default=0)
    # Billing: tokens of this period after which usage is reported to Stripe's meter (the plan's, when the
    # period got it); None: not metered, 0: every token.
    metered_after = models.PositiveBigIntegerField(null=True, blank=True)
    # When the latest reservation was made: a period whose reservations are all older than any request can
    # last holds only leftovers of a process that died mid-request (released by a beat task).
    reserved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = QuotaPeriodQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "start"], name="one_quota_period_per_start")]
        indexes = [models.Index(fields=["user", "-end"], name="usage_period_user_end")]

    def __str__(self):
        return f"{self.user} {self.start:%Y-%m-%d} to {self.end:%Y-%m-%d}"

    @property
    def remaining(self) -> int:
        return max(0, self.allowance - self.used - self.reserved)


class UsageRecord(models.Model):
    """One provider call or prompt-cache hit, written in the same transaction as the assistant message."""

    class Source(models.TextChoices):
        CHAT = "chat"
        API = "api"

    # Indexed by (user, created_at) below: a second index on the user alone would only cost every insert.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_records", db_index=False
    )
    # The API key the call came with (source "api").
    api_key = models.ForeignKey(
        "users.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    # The quota period the tokens counted against (billing reports usage per period).
    period = models.ForeignKey(
        QuotaPeriod, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    message = models.ForeignKey(
        "chat.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    request_id = models.CharField(max_length=64)  # unique: see Meta
    source = models.CharField(max_length=8, choices=Source.choices)
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=16)
    prompt_tokens = models.PositiveIntegerField()
    completion_tokens = models.PositiveIntegerField()
    billable_tokens = models.PositiveIntegerField(help_text="What counted against the user's quota.")
    cost = models.DecimalField(**USD, help_text="What the provider charges us, USD.")
    cached = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="usage_record_user_created")]
        # A constraint rather than unique=True, whose PostgreSQL index for LIKE queries (never made on request
        # ids) every settlement would also write. The settlement's ON CONFLICT (request_id) relies on it.
        constraints = [models.UniqueConstraint(fields=["request_id"], name="usage_record_request_id_unique")]

    def __str__(self):
        return f"{self.request_id} {self.model} {self.prompt_tokens}+{self.completion_tokens}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageDaily(models.Model):
    """What one user's usage records add up to on one UTC day, per model: the rollup the analytics read (never
    the raw records). Upserted by every settlement in its transaction (usage.services.settle); recomputed for
    any day range by `manage.py usage_rollup_rebuild`."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_days")
    day = models.DateField()
    model = models.CharField(max_length=100)
    requests = models.PositiveIntegerField(default=0)
    cached_requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    billable_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**USD, default=Decimal(0))

    class Meta:
        verbose_name = "token analytics"
        verbose_name_plural = "token analytics"
        constraints = [
            models.UniqueConstraint(fields=["user", "day", "model"], name="one_usage_row_per_user_day_model")
        ]
        indexes = [models.Index(fields=["day", "user"], name="usage_daily_day_user")]

    def __str__(self):
        return f"{self.user_id} {self.day} {self.model}"


class AccountAction(models.Model):
    """The audit trail of what staff did to a user's account: who, when, what, why."""

    class Kind(models.TextChoices):
        BONUS_TOKENS = "bonus_tokens", "Granted bonus tokens"
        PERIOD_RESET = "period_reset", "Reset the current period"
        PLAN_CHANGE = "plan_change", "Changed the plan"
        SUSPEND = "suspend", "Suspended chat access"
        REACTIVATE = "reactivate", "Reactivated chat access"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account_actions")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="account_actions_taken")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    detail = models.JSONField(default=dict, blank=True)
    reason = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="usage_action_user_recent")]

    def __str__(self):
        return f"{self.get_kind_display()} for {self.user} by {self.actor}"


class SpendDay(models.Model):
    """What the service used and the provider cost us on one UTC day, per model, across all users: the global
    spend cap reads the cost; the analytics read the days and models from here (a few rows a day) instead of
    the per-user rollup. Kept by settlement, recomputed with UsageDaily by usage_rollup_rebuild.

    Each day and model is split into SHARDS rows (by user id) so that settlements from many users do not all
    queue for one row's lock; the day's figures are the sum of its rows.
    """

    SHARDS = 16

    day = models.DateField()
    model = models.CharField(max_length=100, default="")
    shard = models.PositiveSmallIntegerField()
    cost = models.DecimalField(**USD, default=Decimal(0))
    requests = models.PositiveIntegerField(default=0)
    cached_requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    billable_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "model", "shard"], name="one_spend_row_per_day_model_shard")
        ]

    def __str__(self):
        return f"{self.day} {self.model} #{self.shard}: ${self.cost}"


class SpendControl(models.Model):
    """Staff overrides of the global spend cap (one row). Empty fields fall back to the settings."""

    daily_cap_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    monthly_cap_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    kill_switch = models.BooleanField(default=False, help_text="Refuse every paid call at once.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "spend control"

    def __str__(self):
        return "Spend control"


class ModerationEvent(models.Model):
    """A user's text the moderation model flagged; it was not sent to the completion model."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="moderation_events")
    source = models.CharField(max_length=8, choices=UsageRecord.Source.choices)
    content = models.TextField()
    categories = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"], name="usage_moderation_user_recent"),
            models.Index(fields=["created_at"], name="usage_moderation_created"),
        ]

    def __str__(self):
        return f"{self.user}: {', '.join(self.categories)}"

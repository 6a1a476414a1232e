"""What staff do to a user's account from the admin. Each action is written to the audit trail
(AccountAction: who, when, what, why) in the same transaction as the change itself."""

from django.db import transaction
from django.db.models import BigIntegerField, F, Value
from django.utils import timezone

from core.errors import InvalidInput
from usage.models import AccountAction, Plan, QuotaPeriod, UserPlan
from usage.services.periods import quota_period_current
from usage.services.plans import plan_change, user_plan_create


def _audit(*, actor, user, kind: str, reason: str, **detail) -> AccountAction:
    if not reason or not reason.strip():
        raise InvalidInput("Say why: the reason is recorded with the action.", field="reason")
    return AccountAction.objects.create(actor=actor, user=user, kind=kind, reason=reason.strip(), detail=detail)


@transaction.atomic
def bonus_tokens_grant(*, actor, user, tokens: int, reason: str) -> QuotaPeriod:
    """Add tokens to the user's current period (only this period; they survive a plan change)."""
    if not isinstance(tokens, int) or tokens <= 0:
        raise InvalidInput("Bonus tokens must be a positive whole number.", field="tokens")
    period = quota_period_current(user=user, plan=user_plan_create(user=user).plan)
    amount = Value(tokens, output_field=BigIntegerField())  # not int4 (server-side binding): it may pass 2^31
    QuotaPeriod.objects.filter(pk=period.pk).update(
        bonus_tokens=F("bonus_tokens") + amount, allowance=F("allowance") + amount
    )
    _audit(actor=actor, user=user, kind=AccountAction.Kind.BONUS_TOKENS, reason=reason, tokens=tokens,
           period_id=period.pk)  # fmt: skip
    period.refresh_from_db()
    return period


@transaction.atomic
def quota_period_reset(*, actor, user, reason: str) -> QuotaPeriod:
    """Forget what the user used this period (answers in progress keep their reservations)."""
    period = quota_period_current(user=user, plan=user_plan_create(user=user).plan)
    period = QuotaPeriod.objects.select_for_update().get(pk=period.pk)
    _audit(actor=actor, user=user, kind=AccountAction.Kind.PERIOD_RESET, reason=reason, used_before=period.used,
           period_id=period.pk)  # fmt: skip
    QuotaPeriod.objects.filter(pk=period.pk).update(used=0)
    period.refresh_from_db()
    return period


@transaction.atomic
def plan_change_by_staff(*, actor, user, plan: Plan, reason: str) -> UserPlan:
    before = user_plan_create(user=user).plan
    _audit(actor=actor, user=user, kind=AccountAction.Kind.PLAN_CHANGE, reason=reason, before=before.slug,
           after=plan.slug)  # fmt: skip
    return plan_change(user=user, plan=plan)


@transaction.atomic
def account_suspend(*, actor, user, reason: str) -> UserPlan:
    """Refuse the user's paid calls everywhere (chat, API) until reactivated; the gate says why."""
    user_plan_create(user=user)
    _audit(actor=actor, user=user, kind=AccountAction.Kind.SUSPEND, reason=reason)
    UserPlan.objects.filter(user=user, suspended_at__isnull=True).update(suspended_at=timezone.now())
    return UserPlan.objects.get(user=user)


@transaction.atomic
def account_reactivate(*, actor, user, reason: str) -> UserPlan:
    user_plan_create(user=user)
    _audit(actor=actor, user=user, kind=AccountAction.Kind.REACTIVATE, reason=reason)
    UserPlan.objects.filter(user=user).update(suspended_at=None)
    return UserPlan.objects.get(user=user)


def account_action(*, actor, user, kind: str, reason: str, tokens: int | None = None, plan: Plan | None = None):
    """One of the staff actions above, by its AccountAction kind (the admin's form)."""
    if kind == AccountAction.Kind.BONUS_TOKENS:
        return bonus_tokens_grant(actor=actor, user=user, tokens=tokens, reason=reason)
    if kind == AccountAction.Kind.PERIOD_RESET:
        return quota_period_reset(actor=actor, user=user, reason=reason)
    if kind == AccountAction.Kind.PLAN_CHANGE:
        return plan_change_by_staff(actor=actor, user=user, plan=plan, reason=reason)
    if kind == AccountAction.Kind.SUSPEND:
        return account_suspend(actor=actor, user=user, reason=reason)
    if kind == AccountAction.Kind.REACTIVATE:
        return account_reactivate(actor=actor, user=user, reason=reason)
    raise InvalidInput("Unknown action.", field="kind")

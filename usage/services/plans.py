"""Plans: every user is on exactly one; billing switches them through plan_change."""

from datetime import datetime

from django.db import transaction
from django.db.models import BigIntegerField, F, Value
from django.utils import timezone

from usage.models import Plan, QuotaPeriod, UserPlan
from usage.selectors import default_plan
from usage.services.periods import period_terms, quota_period_align


def user_plan_create(*, user) -> UserPlan:
    user_plan, _ = UserPlan.objects.get_or_create(user=user, defaults={"plan": default_plan()})
    return user_plan


KEEP = object()  # plan_change(billing_cycle=KEEP): the user's periods keep their dates


@transaction.atomic
def plan_change(*, user, plan: Plan, billing_cycle: tuple[datetime, datetime] | object | None = KEEP) -> UserPlan:
    """Put the user on `plan`, the one way plans change (admin, billing). The current period takes the new
    allowance at once (an upgrade is usable immediately; a downgrade below what is used simply leaves
    nothing to spend until the period ends).

    billing_cycle: a subscription's current period (start, end): it becomes the user's period and later
    periods follow it monthly (I6). None: back to calendar months once the current period ends."""
    now = timezone.now()
    defaults = {"plan": plan, "changed_at": now}
    if billing_cycle is not KEEP:
        defaults["cycle_anchor"] = billing_cycle[0] if billing_cycle else None
    user_plan, _ = UserPlan.objects.update_or_create(user=user, defaults=defaults)
    if billing_cycle is not KEEP and billing_cycle:
        quota_period_align(user=user, plan=plan, start=billing_cycle[0], end=billing_cycle[1])
    terms = period_terms(plan)
    # What staff granted stays. A bigint Value: with server-side binding Django would send a plain int as int4
    # (a limit over 2^31 would wrap).
    terms["allowance"] = F("bonus_tokens") + Value(terms["allowance"], output_field=BigIntegerField())
    QuotaPeriod.objects.filter(user=user).containing(now).update(**terms)
    return user_plan

"""Plans: every user is on exactly one; billing switches them through plan_change."""

from django.db import transaction
from django.utils import timezone

from usage.models import Plan, QuotaPeriod, UserPlan
from usage.selectors import default_plan


def user_plan_create(*, user) -> UserPlan:
    user_plan, _ = UserPlan.objects.get_or_create(user=user, defaults={"plan": default_plan()})
    return user_plan


@transaction.atomic
def plan_change(*, user, plan: Plan) -> UserPlan:
    """Put the user on `plan`. The current period takes the new allowance at once (an upgrade is usable
    immediately; a downgrade below what is used simply leaves nothing to spend until the period ends)."""
    user_plan, _ = UserPlan.objects.update_or_create(user=user, defaults={"plan": plan, "changed_at": timezone.now()})
    now = timezone.now()
    QuotaPeriod.objects.filter(user=user).containing(now).update(allowance=plan.monthly_token_allowance)
    return user_plan

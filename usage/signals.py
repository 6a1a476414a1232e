from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="usage_user_plan_on_signup")
def user_plan_on_signup(sender, instance, created, raw=False, **kwargs):
    """Every user has exactly one current plan from the start: the default (free) one."""
    if created and not raw:
        from usage.services import user_plan_create

        user_plan_create(user=instance)

from django.db import migrations

PLANS = [
    {
        "slug": "free",
        "name": "Free",
        "monthly_token_allowance": 200_000,
        "requests_per_minute": 10,
        "requests_per_day": 200,
        "tokens_per_day": 50_000,
        "allowed_models": [],
        "max_tokens_per_request": 1024,
        "is_default": True,
    },
    {
        "slug": "pro",
        "name": "Pro",
        "monthly_token_allowance": 5_000_000,
        "requests_per_minute": 60,
        "requests_per_day": 5_000,
        "tokens_per_day": 1_000_000,
        "allowed_models": [],
        "max_tokens_per_request": 4096,
        "is_default": False,
    },
]


def create_plans(apps, schema_editor):
    Plan = apps.get_model("usage", "Plan")
    UserPlan = apps.get_model("usage", "UserPlan")
    User = apps.get_model("users", "User")
    for fields in PLANS:
        Plan.objects.update_or_create(slug=fields["slug"], defaults=fields)
    free = Plan.objects.get(slug="free")
    UserPlan.objects.bulk_create(
        [UserPlan(user_id=pk, plan=free) for pk in User.objects.values_list("pk", flat=True)], ignore_conflicts=True
    )


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial"), ("users", "0001_initial")]

    operations = [migrations.RunPython(create_plans, migrations.RunPython.noop)]

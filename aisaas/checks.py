"""Project-wide system checks: misconfiguration is reported at start-up, not discovered by users."""

from django.conf import settings
from django.core import checks
from django.core.management import call_command

from llm.provider import ModelConfigError, model_catalogue

INSECURE_SECRET_PREFIX = "django-insecure"  # noqa: S105 (a prefix to reject, not a secret)


@checks.register("aisaas")
def check_production_settings(app_configs=None, **kwargs):
    if settings.DEBUG:
        return []
    errors = []
    key = settings.SECRET_KEY
    if key.startswith(INSECURE_SECRET_PREFIX) or len(key) < 50 or len(set(key)) < 5:
        errors.append(
            checks.Error(
                "SECRET_KEY is insecure: use at least 50 random characters, not a 'django-insecure' key.",
                hint="python -c 'import secrets; print(secrets.token_urlsafe(64))'",
                id="aisaas.E001",
            )
        )
    if "*" in settings.ALLOWED_HOSTS:
        errors.append(checks.Error("ALLOWED_HOSTS must name the hosts, not '*', when DEBUG is off.", id="aisaas.E002"))
    return errors


@checks.register("aisaas")
def check_llm_settings(app_configs=None, **kwargs):
    try:
        model_catalogue()
    except ModelConfigError as error:
        return [checks.Error(str(error), hint="See LLM_MODELS in .env.example.", id="aisaas.E010")]
    return []


def stop_unless_deployable() -> None:
    """Run the system checks (with the deployment ones) and refuse to start on any error, when DEBUG is off."""
    if not settings.DEBUG:
        call_command("check", deploy=True, fail_level="ERROR")

"""Start-up configuration: production refuses to start misconfigured; the deploy checks are clean."""

import os
import secrets
import subprocess
import sys

import pytest

from tests.servers import ROOT

CONFIG_NAMES = (
    "DEBUG",
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "DEVLLM_PORT",
    "ALLOWED_HOSTS",
    "GOOGLE_OAUTH_CLIENT_ID",
    "GOOGLE_OAUTH_SECRET",
    "GITHUB_OAUTH_CLIENT_ID",
    "GITHUB_OAUTH_SECRET",
)
# What aisaas.embedded sets for the embedded default (nothing needs to listen there for these tests).
SERVICES = {"DATABASE_URL": "postgres://postgres@127.0.0.1:1/aisaas", "REDIS_URL": "redis://127.0.0.1:1/0"}
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "DATABASE_URL": "postgres://aisaas@db.internal:5432/aisaas",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "LLM_BASE_URL": "https://llm.internal/v1",
    "LLM_API_KEY": "sk-production-key",
    "ALLOWED_HOSTS": "aisaas.example.com",
}


def settings_of(*names: str, **env: str) -> list[str]:
    """Expressions over the settings `s`, as a fresh process with this environment sees them."""
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        f"print(*[eval(expression, {{'s': s}}) for expression in {list(names)!r}])"
    )
    result = run(["-c", code], DJANGO_SETTINGS_MODULE="aisaas.settings", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_NAMES}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_production_without_secrets_stops_with_one_clear_message():
    result = run(["manage.py", "check"], DEBUG="false")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in message
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "LLM_BASE_URL", "LLM_API_KEY"):
        assert name in message


def test_production_with_an_insecure_secret_key_fails_the_checks_and_the_server_does_not_start():
    env = {**PRODUCTION, "SECRET_KEY": "django-insecure-abc"}
    result = run(["manage.py", "check"], **env)
    assert result.returncode != 0 and "aisaas.E001" in result.stderr
    result = run(["-c", "import aisaas.asgi"], **env)
    assert result.returncode != 0 and "aisaas.E001" in result.stderr


def test_production_refuses_other_insecure_values():
    result = run(["manage.py", "check"], **{**PRODUCTION, "ALLOWED_HOSTS": "*"})
    assert result.returncode != 0 and "aisaas.E002" in result.stderr


@pytest.mark.parametrize("debug", ["true", "false"])
def test_a_database_other_than_postgresql_stops_start_up(debug):
    result = run(["manage.py", "check"], **{**PRODUCTION, "DEBUG": debug, "DATABASE_URL": "sqlite:////tmp/x.db"})
    assert result.returncode != 0
    assert "DATABASE_URL must point at PostgreSQL" in result.stderr.strip().splitlines()[-1]


def test_check_deploy_is_clean_under_production_settings():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_bad_model_list_is_a_startup_error():
    result = run(["manage.py", "check"], LLM_MODELS="gpt-4o-mini", **SERVICES)
    assert result.returncode != 0 and "aisaas.E010" in result.stderr


def test_without_service_urls_start_up_stops_and_says_how_to_get_them():
    result = run(["manage.py", "check"])

    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "DATABASE_URL, REDIS_URL" in message and "make run" in message


def test_with_the_service_urls_the_embedded_default_needs_nothing_else():
    """What aisaas.embedded sets is all it takes: Redis for the cache, the channel layer, the limits and Celery
    (tasks run inline), the dev LLM labelled as a demo."""
    assert settings_of(
        "s.DEBUG",
        "s.CACHES['default']['BACKEND']",
        "s.CHANNEL_LAYERS['default']['BACKEND']",
        "s.CELERY_BROKER_URL",
        "s.LIMITS_REDIS_URL",
        "s.CELERY_TASK_ALWAYS_EAGER",
        "s.LLM_DEMO",
        **SERVICES,
    ) == [
        "True",
        "core.cache.OutageTolerantRedisCache",
        "core.channels.OutageTolerantRedisChannelLayer",
        SERVICES["REDIS_URL"],
        SERVICES["REDIS_URL"],
        "True",
        "True",
    ]


def test_social_logins_are_switched_on_by_environment_variables():
    assert settings_of("sorted(s.SOCIALACCOUNT_PROVIDERS)", **SERVICES) == ["[]"]
    switched_on = settings_of(
        "sorted(s.SOCIALACCOUNT_PROVIDERS)", GITHUB_OAUTH_CLIENT_ID="id", GITHUB_OAUTH_SECRET="s", **SERVICES
    )
    assert switched_on == ["['github']"]


def test_prepared_statements_follow_the_database_settings():
    """Behind a transaction-mode pgbouncer nothing may be prepared (DB_PREPARE_THRESHOLD=0): the ORM's connections
    and the gate's pool take their parameters from these OPTIONS (tests/test_loop_database.py)."""
    options = "repr(sorted(s.DATABASES['default']['OPTIONS'].items())).replace(' ', '')"
    assert settings_of(options, **SERVICES) == ["[('prepare_threshold',5),('server_side_binding',True)]"]
    assert settings_of(options, DB_PREPARE_THRESHOLD="0", **SERVICES) == ["[('prepare_threshold',None)]"]


def test_the_embedded_default_calls_the_dev_llm_on_the_port_make_run_starts_it_on():
    assert settings_of("s.LLM_BASE_URL", **SERVICES) == ["http://127.0.0.1:8001/v1"]
    assert settings_of("s.LLM_BASE_URL", "s.LLM_DEMO", DEVLLM_PORT="8123", **SERVICES) == [
        "http://127.0.0.1:8123/v1",
        "True",
    ]

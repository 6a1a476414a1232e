"""Error reports (the e-mails to ADMINS) never carry a credential: every service URL and the settings built from
them are masked."""

import pytest
from django.core import mail
from django.test import RequestFactory
from django.utils.log import AdminEmailHandler

SECRETS = {
    "DATABASE_URL": "postgres://aisaas:db-password-123@db.internal:5432/aisaas",
    "REDIS_URL": "redis://:redis-password-456@cache.internal:6379/0",
    "CELERY_BROKER_URL": "redis://:redis-password-456@cache.internal:6379/0",
    "LIMITS_REDIS_URL": "redis://:limits-password-789@cache.internal:6379/1",
    "LLM_API_KEY": "sk-provider-key-000",
    "EMAIL_HOST_PASSWORD": "mail-password-111",
}


def configure(settings) -> None:
    """The secrets go into the settings here, so that no frame of the report below holds one in a local."""
    for name, value in SECRETS.items():
        setattr(settings, name, value)


def test_an_error_report_masks_every_credential_bearing_setting(settings):
    configure(settings)
    settings.DATABASES = {"default": {**settings.DATABASES["default"], "PASSWORD": "db-password-123"}}
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": SECRETS["REDIS_URL"]}}
    settings.ADMINS = [("Staff", "staff@example.com")]
    settings.DEBUG = False
    request = RequestFactory().post("/accounts/login/", {"login": "someone@example.com", "password": "hunter2-pw"})
    handler = AdminEmailHandler(include_html=True)

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import logging
        import sys

        record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error", (),
                                   sys.exc_info())  # fmt: skip
        record.request = request
        record.status_code = 500
        handler.emit(record)

    (report,) = mail.outbox
    text = report.body + "".join(str(content) for content, _ in report.alternatives)
    assert "DATABASE_URL" in text and "boom" in text  # the report is there, with its settings
    for secret in ("db-password-123", "redis-password-456", "limits-password-789", "sk-provider-key-000",
                   "mail-password-111", "hunter2-pw"):  # fmt: skip
        assert secret not in text, secret


pytestmark = pytest.mark.django_db


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body", [{"login": "a@example.com", "password": "x" * 3_000_000}, {f"field{n}": "x" for n in range(1500)}]
)
def test_an_oversize_post_is_a_400_and_mails_nobody(client, settings, body):
    settings.ADMINS = [("Staff", "staff@example.com")]
    settings.DEBUG = False

    answer = client.post("/accounts/login/", body)

    assert answer.status_code == 400 and mail.outbox == []

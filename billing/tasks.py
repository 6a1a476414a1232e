import logging
import time

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


@shared_task(soft_time_limit=50, time_limit=60)
def report_usage() -> dict:
    """Every minute: write the metered usage not reported yet to the outbox, then send what is due. Safe to
    run twice or concurrently (see billing.metering)."""
    from billing.metering import meter_reports_prepare, meter_reports_send
    from billing.stripe_api import billing_enabled

    if not billing_enabled():
        return {}
    prepared = meter_reports_prepare()
    result = meter_reports_send(deadline=time.monotonic() + 45)
    return {"prepared": prepared, "sent": result.sent, "failed": result.failed, "rate_limited": result.rate_limited}


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=3, soft_time_limit=240, time_limit=300)
def enforce_past_due_grace() -> int:
    from billing.services import past_due_grace_enforce

    return past_due_grace_enforce()


def _mail(user_id: int, template: str, context: dict) -> None:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not user.email:
        return
    context = {"user": user, "site_url": settings.SITE_URL, **context}
    subject = render_to_string(f"billing/email/{template}_subject.txt", context).strip()
    send_mail(subject, render_to_string(f"billing/email/{template}.txt", context), None, [user.email])


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def notify_payment_failed(*, user_id: int, invoice_url: str) -> None:
    _mail(user_id, "payment_failed", {"invoice_url": invoice_url, "grace_days": settings.BILLING_PAST_DUE_GRACE_DAYS})


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def notify_trial_ending(*, user_id: int, trial_end: int | None) -> None:
    from datetime import UTC, datetime

    ends = datetime.fromtimestamp(trial_end, UTC) if trial_end else None
    _mail(user_id, "trial_ending", {"trial_end": ends})


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=3, soft_time_limit=240, time_limit=300)
def purge_webhook_events() -> int:
    """Daily: delete the raw webhook deliveries older than BILLING_WEBHOOK_RETENTION_DAYS."""
    from billing.services import webhook_events_purge

    return webhook_events_purge()

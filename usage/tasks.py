import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=3, soft_time_limit=240, time_limit=300)
def reset_monthly_quotas() -> int:
    from usage.services import quota_periods_roll_over

    return quota_periods_roll_over()


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=3, soft_time_limit=50, time_limit=60)
def expire_stale_reservations() -> int:
    from usage.services import quota_reservations_expire

    return quota_reservations_expire()


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=3, soft_time_limit=50, time_limit=60)
def alert_spend_cap(*, period: str, amount: str, cap: str) -> None:
    """Mail staff that the global spend cap refuses paid calls (queued once per day or month)."""
    from usage.services import spend_cap_alert_send

    spend_cap_alert_send(period=period, amount=amount, cap=cap)


@shared_task(soft_time_limit=50, time_limit=60)
def replay_deferred_settlements() -> int:
    """Settlements deferred through a PostgreSQL outage by a process that did not live to replay them
    (usage.services.deferred). Runs every minute; safe beside the processes replaying their own."""
    from usage.services.deferred import deferred_settlements_replay

    return deferred_settlements_replay()

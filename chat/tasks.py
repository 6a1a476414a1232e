from celery import shared_task


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=3, soft_time_limit=50, time_limit=60)
def expire_stale_streams() -> int:
    from chat.services import stale_streams_expire

    return stale_streams_expire()

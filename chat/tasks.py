from celery import shared_task


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=3, soft_time_limit=50, time_limit=60)
def expire_stale_streams() -> int:
    from chat.services import stale_streams_expire

    return stale_streams_expire()


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=3, soft_time_limit=840, time_limit=900)
def purge_old_content() -> int:
    from chat.services import content_purge

    return content_purge()

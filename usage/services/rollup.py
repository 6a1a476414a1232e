"""The analytics rollup (UsageDaily): kept by every settlement, recomputable from the usage records."""

from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from usage.models import UsageDaily, UsageRecord


def usage_rollup_rebuild(*, first_day: date, last_day: date) -> int:
    """Recompute UsageDaily for the UTC days [first_day, last_day] from the usage records, in one
    transaction and two statements (DELETE, INSERT ... SELECT). Idempotent. On PostgreSQL the rollup table is
    locked against writers meanwhile, so a settlement running at the same time waits and then adds itself to
    the recomputed rows: nothing is counted twice or lost. Returns the number of rows written."""
    start = datetime.combine(first_day, time.min, UTC)
    end = datetime.combine(last_day + timedelta(days=1), time.min, UTC)
    totals = (
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at"))
        .values("user_id", "model", "day")
        .annotate(
            requests=Count("id"),
            cached_requests=Count("id", filter=Q(cached=True)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            billable_tokens=Sum("billable_tokens"),
            cost=Sum("cost"),
        )
        .order_by()
    )
    select_sql, params = totals.query.sql_with_params()
    # The SELECT's columns, in the order Django wrote them: the grouped values, then the aggregates.
    columns = [*totals.query.values_select, *totals.query.annotation_select]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("LOCK TABLE usage_usagedaily IN SHARE ROW EXCLUSIVE MODE")
        UsageDaily.objects.filter(day__gte=first_day, day__lte=last_day).delete()
        quoted = ", ".join(connection.ops.quote_name(column) for column in columns)
        cursor.execute(f"INSERT INTO usage_usagedaily ({quoted}) {select_sql}", params)
        return cursor.rowcount

"""The rollups of the usage records: UsageDaily (per user, day and model) and SpendDay (per day, model and
shard, across users). Settlement keeps both; this recomputes them from the records."""

from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import Mod, TruncDate

from usage.models import SpendDay, UsageDaily, UsageRecord

_TOTALS = {
    "requests": Count("id"),
    "cached_requests": Count("id", filter=Q(cached=True)),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "billable_tokens": Sum("billable_tokens"),
    "cost": Sum("cost"),
}


def usage_rollup_rebuild(*, first_day: date, last_day: date) -> int:
    """Recompute both rollups for the UTC days [first_day, last_day] from the usage records, in one
    transaction: per table a DELETE and an INSERT ... SELECT. Idempotent. The rollup tables are
    locked against writers meanwhile, so a settlement running at the same time waits and then adds itself to
    the recomputed rows: nothing is counted twice or lost. Returns the number of UsageDaily rows written."""
    start = datetime.combine(first_day, time.min, UTC)
    end = datetime.combine(last_day + timedelta(days=1), time.min, UTC)
    records = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end).annotate(
        day=TruncDate("created_at"), shard=Mod("user_id", SpendDay.SHARDS)
    )
    per_user = records.values("user_id", "model", "day").annotate(**_TOTALS).order_by()
    per_shard = records.values("model", "day", "shard").annotate(**_TOTALS).order_by()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE usage_usagedaily, usage_spendday IN SHARE ROW EXCLUSIVE MODE")
        UsageDaily.objects.filter(day__gte=first_day, day__lte=last_day).delete()
        SpendDay.objects.filter(day__gte=first_day, day__lte=last_day).delete()
        written = _insert_select(UsageDaily, per_user)
        _insert_select(SpendDay, per_shard)
    return written


def _insert_select(model, totals) -> int:
    """INSERT INTO the model's table the rows of a grouped queryset, in the database: no row passes through
    Python. The columns are the SELECT's, in the order Django wrote them (grouped values, then aggregates)."""
    select_sql, params = totals.query.sql_with_params()
    columns = ", ".join(
        connection.ops.quote_name(name) for name in [*totals.query.values_select, *totals.query.annotation_select]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {model._meta.db_table} ({columns}) {select_sql}", params)
        return cursor.rowcount

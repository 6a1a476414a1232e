"""Settlement: every provider call (or cache hit) accounted exactly once, in the answer's transaction (I2)."""

import functools
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chat.llm import model_catalogue
from usage import limits, prompt_cache
from usage.models import QuotaPeriod, SpendDay
from usage.selectors import quota_meter
from usage.services.gate import Admission

COST_PLACES = Decimal("0.0000000001")


def cost_of(*, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    info = model_catalogue().get(model) or model_catalogue().fallback
    if info is None:
        return Decimal(0)
    cost = (prompt_tokens * info.input_usd_per_1m + completion_tokens * info.output_usd_per_1m) / 1_000_000
    return cost.quantize(COST_PLACES)


@dataclass(frozen=True)
class Settlement:
    recorded: bool  # False: this request was settled before, nothing was written
    billable_tokens: int
    meter: dict  # the user's period afterwards, as usage.selectors.quota_meter shows it


# Exactly-once lives in the SQL: the record is inserted unless its request id exists (the unique index makes a
# concurrent duplicate wait, then skip), and the spend, the rollup and the quota change only if *this attempt*
# inserted the record ({recorded}). On PostgreSQL all of it, and the caller's own statement (the answer's
# UPDATE), is one statement of data-modifying CTEs: one round trip and one commit, where a transaction of
# separate statements cost four round trips (docs/performance.md). A single statement is atomic on its own.
# Elsewhere (SQLite) the same statements run one by one in a transaction.
_RECORD_INSERT_SQL = """
    INSERT INTO usage_usagerecord (user_id, period_id, api_key_id, conversation_id, message_id, request_id, source,
        model, status, prompt_tokens, completion_tokens, billable_tokens, cost, cached, latency_ms, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (request_id) DO NOTHING
"""
_SPEND_ADD_SQL = """
    INSERT INTO usage_spendday (day, model, shard, cost, requests, cached_requests, prompt_tokens, completion_tokens,
        billable_tokens)
    SELECT %s, %s, %s, %s, 1, %s, %s, %s, %s
    WHERE {recorded}
    ON CONFLICT (day, model, shard) DO UPDATE
    SET cost = usage_spendday.cost + EXCLUDED.cost,
        requests = usage_spendday.requests + 1,
        cached_requests = usage_spendday.cached_requests + EXCLUDED.cached_requests,
        prompt_tokens = usage_spendday.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = usage_spendday.completion_tokens + EXCLUDED.completion_tokens,
        billable_tokens = usage_spendday.billable_tokens + EXCLUDED.billable_tokens
"""
# The analytics rollup (UsageDaily), in the same transaction: it always equals the sum of the records.
_DAILY_ADD_SQL = """
    INSERT INTO usage_usagedaily (user_id, day, model, requests, cached_requests, prompt_tokens, completion_tokens,
        billable_tokens, cost)
    SELECT %s, %s, %s, 1, %s, %s, %s, %s, %s
    WHERE {recorded}
    ON CONFLICT (user_id, day, model) DO UPDATE
    SET requests = usage_usagedaily.requests + 1,
        cached_requests = usage_usagedaily.cached_requests + EXCLUDED.cached_requests,
        prompt_tokens = usage_usagedaily.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = usage_usagedaily.completion_tokens + EXCLUDED.completion_tokens,
        billable_tokens = usage_usagedaily.billable_tokens + EXCLUDED.billable_tokens,
        cost = usage_usagedaily.cost + EXCLUDED.cost
"""
# `reserved` never goes below zero: a slow request's reservation may have been released as stale meanwhile.
_QUOTA_SETTLE_SQL = """
    UPDATE usage_quotaperiod
    SET used = used + %s, cost = cost + %s, reserved = CASE WHEN reserved > %s THEN reserved - %s ELSE 0 END
    WHERE id = %s AND {recorded}
    RETURNING allowance, used, reserved
"""
# Whether this attempt inserted the record: in one statement, the record CTE's output (its siblings cannot see
# its row in the table: they share one snapshot); statement by statement, the row with this attempt's time.
_RECORDED_BY_CTE = "EXISTS (SELECT 1 FROM recorded)"
_RECORDED_IN_TABLE = "EXISTS (SELECT 1 FROM usage_usagerecord WHERE request_id = %s AND created_at = %s)"
_SETTLEMENT_STATEMENTS = [  # statement by statement, after the record's INSERT
    sql.format(recorded=_RECORDED_IN_TABLE) for sql in (_SPEND_ADD_SQL, _DAILY_ADD_SQL, _QUOTA_SETTLE_SQL)
]


@functools.cache
def _settlement_statement(together: str | None) -> str:
    """The whole settlement as one statement (PostgreSQL), with the caller's `together` statement in it."""
    return (
        f"WITH recorded AS ({_RECORD_INSERT_SQL} RETURNING 1), "
        + (f"together AS ({together}), " if together else "")
        + f"spend AS ({_SPEND_ADD_SQL.format(recorded=_RECORDED_BY_CTE)}), "
        f"daily AS ({_DAILY_ADD_SQL.format(recorded=_RECORDED_BY_CTE)}) "
        f"{_QUOTA_SETTLE_SQL.format(recorded=_RECORDED_BY_CTE)}"
    )


def usage_settle(
    *,
    admission: Admission,
    conversation_id: int | None,
    message_id: int | None,
    model: str,
    status: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached: bool = False,
    together_with: tuple[str, list] | None = None,
) -> Settlement:
    """Account for one provider call (or cache hit) exactly once (I2): the usage record, the period's quota
    moved from reserved to used at the actual amount, the day's spend and the analytics rollup, all or none.
    `together_with`: a statement of the caller's (SQL, params) committed with them, all or none (the answer's
    UPDATE: chat.services.turn_finish_statement). Plain SQL, one statement on PostgreSQL: it runs after every
    message."""
    if cached:
        cost = Decimal(0)  # nothing was paid to the provider
        billable = prompt_tokens + completion_tokens if settings.PROMPT_CACHE_HIT_CHARGE == "full" else 0
    else:
        cost = cost_of(model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        billable = prompt_tokens + completion_tokens
    ops, now = connection.ops, timezone.now()
    request_id, created_at = admission.request_id, ops.adapt_datetimefield_value(now)
    cost_value = ops.adapt_decimalfield_value(cost, 20, 10)
    reserved_tokens = admission.reserved_tokens
    day = ops.adapt_datefield_value(now.date())
    tallies = [1 if cached else 0, prompt_tokens, completion_tokens, billable]
    record = [
        admission.user_id,
        admission.period_id,
        admission.api_key_id,
        conversation_id,
        message_id,
        request_id,
        admission.source,
        model,
        status,
        prompt_tokens,
        completion_tokens,
        billable,
        cost_value,
        cached,
        round((time.monotonic() - admission.admitted_at) * 1000),
        created_at,
    ]
    spend = [day, model, admission.user_id % SpendDay.SHARDS, cost_value, *tallies]
    daily = [admission.user_id, day, model, *tallies, cost_value]
    quota = [billable, cost_value, reserved_tokens, reserved_tokens, admission.period_id]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                _settlement_statement(together_with[0] if together_with else None),
                [*record, *(together_with[1] if together_with else ()), *spend, *daily, *quota],
            )
            row = cursor.fetchone()  # the quota row, if this attempt recorded the call
        else:
            recorded = [request_id, created_at]
            with transaction.atomic(savepoint=False):
                if together_with:
                    cursor.execute(*together_with)
                cursor.execute(_RECORD_INSERT_SQL, record)
                for statement, params in zip(_SETTLEMENT_STATEMENTS, (spend, daily, quota), strict=True):
                    cursor.execute(statement, [*params, *recorded])
                row = cursor.fetchone()  # before the commit: SQLite commits no statement still returning rows
    if row is None:  # settled before (a retry): report the period as it is
        period = QuotaPeriod.objects.get(pk=admission.period_id)
    else:
        period = QuotaPeriod(allowance=row[0], used=row[1], reserved=row[2], end=admission.period_end)
    return Settlement(row is not None, billable if row is not None else 0, quota_meter(period=period))


def limits_settle(*, admission: Admission, settlement: Settlement, cache_answer: dict | None = None) -> None:
    """After the commit: the tokens/day limit keeps what was used and gets the rest of the hold back, and
    `cache_answer` (a complete answer) goes into the prompt cache under the admission's key: in the same
    Redis round trip when the cache shares the limits' Redis."""
    unused = admission.reserved_tokens - settlement.billable_tokens if settlement.recorded else 0
    write = None
    if cache_answer is not None and admission.cache_key:
        if prompt_cache.rides_with_limits():
            write = prompt_cache.raw_write(admission.cache_key, cache_answer)
        else:
            prompt_cache.put(admission.cache_key, cache_answer)
    limits.give_back_quietly(admission.tokens_limit, unused, write=write)

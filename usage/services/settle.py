"""Settlement: every provider call (or cache hit) accounted exactly once, in the answer's transaction (I2)."""

import asyncio
import functools
import time
from dataclasses import dataclass
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from aisaas.db import in_db_thread, loop_fetchone, loop_queries_supported
from chat.llm import model_catalogue
from usage import limits, prompt_cache
from usage.models import QuotaPeriod, SpendDay
from usage.selectors import quota_meter, quota_meter_of
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


@dataclass(frozen=True)
class _Settling:
    """One settlement's statements' parameters (see usage_settle)."""

    billable: int
    record: list
    spend: list
    daily: list
    quota: list
    recorded: list  # statement by statement: how to find this attempt's record (_RECORDED_IN_TABLE)

    def statement(self, together_with: tuple[str, list] | None) -> tuple[str, list]:
        """The whole settlement as one statement (PostgreSQL)."""
        together_sql, together_params = together_with or (None, ())
        return _settlement_statement(together_sql), [
            *self.record,
            *together_params,
            *self.spend,
            *self.daily,
            *self.quota,
        ]

    def settlement(self, row: tuple | None, *, admission: Admission, period: QuotaPeriod | None = None) -> Settlement:
        """The outcome, from the quota row this attempt returned (None: settled before; then `period` as it is)."""
        if row is None:
            return Settlement(False, 0, quota_meter(period=period))
        allowance, used, reserved = row
        meter = quota_meter_of(allowance=allowance, used=used, reserved=reserved, end=admission.period_end)
        return Settlement(True, self.billable, meter)


def _settling(
    *,
    admission: Admission,
    conversation_id: int | None,
    message_id: int | None,
    model: str,
    status: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached: bool,
) -> _Settling:
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
    return _Settling(
        billable=billable,
        record=record,
        spend=[day, model, admission.user_id % SpendDay.SHARDS, cost_value, *tallies],
        daily=[admission.user_id, day, model, *tallies, cost_value],
        quota=[billable, cost_value, reserved_tokens, reserved_tokens, admission.period_id],
        recorded=[request_id, created_at],
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
    message. From async code: usage_settle_on_loop."""
    settling = _settling(
        admission=admission,
        conversation_id=conversation_id,
        message_id=message_id,
        model=model,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached=cached,
    )
    return _settle(settling, admission=admission, together_with=together_with)


def _settle(settling: _Settling, *, admission: Admission, together_with: tuple[str, list] | None) -> Settlement:
    """Write a settlement worked out by _settling: one statement on PostgreSQL, one transaction elsewhere."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(*settling.statement(together_with))
            row = cursor.fetchone()  # the quota row, if this attempt recorded the call
        else:
            with transaction.atomic(savepoint=False):
                if together_with:
                    cursor.execute(*together_with)
                cursor.execute(_RECORD_INSERT_SQL, settling.record)
                for statement, params in zip(
                    _SETTLEMENT_STATEMENTS, (settling.spend, settling.daily, settling.quota), strict=True
                ):
                    cursor.execute(statement, [*params, *settling.recorded])
                row = cursor.fetchone()  # before the commit: SQLite commits no statement still returning rows
    if row is None:  # settled before (a retry): report the period as it is
        return settling.settlement(None, admission=admission, period=QuotaPeriod.objects.get(pk=admission.period_id))
    return settling.settlement(row, admission=admission)


async def usage_settle_on_loop(
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
    cache_answer: dict | None = None,
) -> Settlement:
    """usage_settle from async code, and with it what the settlement changes in Redis: the tokens/day limit
    keeps what was used and gets the rest of its hold back, and `cache_answer` (a complete answer) goes into
    the prompt cache under the admission's key.

    On PostgreSQL the settlement's one statement runs on the event loop's own connection (no database thread,
    whose hop costs more than the statement: docs/performance.md), and the give-back is sent right after it,
    while it runs: it needs nothing the statement decides, and it counts once per request however often a
    settlement is retried (the usage record's unique request id does the same in the database). A failure raises
    LoopDatabaseError where the thread raises DatabaseError. Elsewhere (SQLite) in a database thread."""
    settling = _settling(
        admission=admission,
        conversation_id=conversation_id,
        message_id=message_id,
        model=model,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached=cached,
    )
    given_back = _limits_settle_soon(admission, used=settling.billable, cache_answer=cache_answer)
    if not loop_queries_supported():
        settlement = await in_db_thread(_settle)(settling, admission=admission, together_with=together_with)
        await given_back
        return settlement
    # In this task, not one of its own: the give-back goes out in the loop's next turn, after the statement.
    row = await loop_fetchone(*settling.statement(together_with))
    await given_back
    if row is None:  # settled before (a retry): report the period as it is
        period = await in_db_thread(QuotaPeriod.objects.get)(pk=admission.period_id)
        return settling.settlement(None, admission=admission, period=period)
    return settling.settlement(row, admission=admission)


def _limits_settle_soon(admission: Admission, *, used: int, cache_answer: dict | None) -> asyncio.Future:
    """The tokens/day limit's hold given back but for the `used` tokens (once per request), and `cache_answer`
    stored: in the same Redis round trip when the cache shares the limits' Redis, sent in the loop's next turn
    (limits.give_back_soon). A future that never fails: both are logged and let go if they do."""
    write = stored = None
    if cache_answer is not None and admission.cache_key:
        if prompt_cache.rides_with_limits():
            write = prompt_cache.raw_write(admission.cache_key, cache_answer)
        else:  # a cache of its own (local memory in the embedded default, or another server): its own client
            put = sync_to_async(prompt_cache.put, thread_sensitive=False)
            stored = asyncio.ensure_future(put(admission.cache_key, cache_answer))
    given_back = limits.give_back_soon(
        admission.tokens_limit, admission.reserved_tokens - used, write=write, once_for=admission.request_id
    )
    return given_back if stored is None else asyncio.gather(stored, given_back)

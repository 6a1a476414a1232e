"""Settlement: every provider call (or cache hit) accounted exactly once, in the answer's transaction (I2)."""

import asyncio
import functools
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from core.db import LoopDatabaseUnreachable, in_db_thread, loop_fetchone
from llm.provider import model_catalogue
from usage import limits, prompt_cache
from usage.models import QuotaPeriod, SpendDay
from usage.selectors import quota_meter, quota_meter_of
from usage.services.deferred import settlement_defer
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
    # The user's period afterwards, as usage.selectors.quota_meter shows it; None while the settlement is deferred.
    meter: dict | None


# Exactly-once lives in the SQL: the record is inserted unless its request id exists (the unique index makes a
# concurrent duplicate wait, then skip), and the spend, the rollup and the quota change only if *this attempt*
# inserted the record (the record CTE's output: its siblings cannot see its row in the table, they share one
# snapshot). All of it, and the caller's own statement (the answer's UPDATE), is one statement of data-modifying
# CTEs: one round trip and one commit, where a transaction of separate statements cost four round trips
# (docs/performance.md). A single statement is atomic on its own.
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
_RECORDED = "EXISTS (SELECT 1 FROM recorded)"


@functools.cache
def _settlement_statement(together: str | None) -> str:
    """The whole settlement as one statement, with the caller's `together` statement in it."""
    return (
        f"WITH recorded AS ({_RECORD_INSERT_SQL} RETURNING 1), "
        + (f"together AS ({together}), " if together else "")
        + f"spend AS ({_SPEND_ADD_SQL.format(recorded=_RECORDED)}), "
        f"daily AS ({_DAILY_ADD_SQL.format(recorded=_RECORDED)}) "
        f"{_QUOTA_SETTLE_SQL.format(recorded=_RECORDED)}"
    )


@dataclass(frozen=True)
class _Settling:
    """One settlement's statements' parameters (see usage_settle)."""

    billable: int
    record: list
    spend: list
    daily: list
    quota: list

    def statement(self, together_with: tuple[str, list] | None) -> tuple[str, list]:
        """The whole settlement as one statement."""
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
    now = timezone.now()
    reserved_tokens = admission.reserved_tokens
    day = now.date()
    tallies = [1 if cached else 0, prompt_tokens, completion_tokens, billable]
    record = [
        admission.user_id,
        admission.period_id,
        admission.api_key_id,
        conversation_id,
        message_id,
        admission.request_id,
        admission.source,
        model,
        status,
        prompt_tokens,
        completion_tokens,
        billable,
        cost,
        cached,
        round((time.monotonic() - admission.admitted_at) * 1000),
        now,
    ]
    return _Settling(
        billable=billable,
        record=record,
        spend=[day, model, admission.user_id % SpendDay.SHARDS, cost, *tallies],
        daily=[admission.user_id, day, model, *tallies, cost],
        quota=[billable, cost, reserved_tokens, reserved_tokens, admission.period_id],
    )


async def usage_settle(
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
    """Account for one provider call (or cache hit) exactly once (I2): the usage record, the period's quota
    moved from reserved to used at the actual amount, the day's spend and the analytics rollup, all or none, in
    one statement on the event loop's pool (core.db). `together_with`: a statement of the caller's (SQL,
    params) committed with them, all or none (the answer's UPDATE: chat.services.turn_finish_statement).

    And what the settlement changes in Redis, sent alongside the statement: the tokens/day limit keeps what was
    used and gets the rest of its hold back, and `cache_answer` (a complete answer) goes into the prompt cache
    under the admission's key. The give-back counts once per request however often a settlement is retried (as
    the usage record's unique request id does in the database).

    If PostgreSQL cannot be reached, the settlement is kept outside it and replayed until it is written, once
    (usage.services.deferred, I9): the call is accounted and its answer saved when the database is back, and the
    Settlement's meter is None meanwhile. Any other database error is raised: retrying is safe."""
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
    write = None
    if cache_answer is not None and admission.cache_key:
        write = prompt_cache.write(admission.cache_key, cache_answer)
    unused = admission.reserved_tokens - settling.billable
    given_back = limits.give_back(admission.tokens_limit, unused, write=write, once_for=admission.request_id)
    statement = settling.statement(together_with)
    row, _ = await asyncio.gather(_settlement_run(admission.request_id, statement), given_back)
    if row is _DEFERRED:
        return Settlement(True, settling.billable, None)
    if row is None:  # settled before (a retry): report the period as it is
        period = await in_db_thread(QuotaPeriod.objects.get)(pk=admission.period_id)
        return settling.settlement(None, admission=admission, period=period)
    return settling.settlement(row, admission=admission)


_DEFERRED = object()


async def _settlement_run(request_id: str, statement: tuple[str, list]):
    """The settlement statement's row; if PostgreSQL cannot be reached (core.db has already retried once on a
    fresh connection), the statement is deferred (usage.services.deferred) and _DEFERRED returned."""
    try:
        return await loop_fetchone(*statement)
    except LoopDatabaseUnreachable:
        await settlement_defer(request_id=request_id, sql=statement[0], params=statement[1])
        return _DEFERRED

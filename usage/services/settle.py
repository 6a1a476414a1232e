"""Settlement: every provider call (or cache hit) accounted exactly once, in the answer's transaction (I2)."""

import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chat.llm import model_catalogue
from usage import limits
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


_RECORD_INSERT_SQL = """
    INSERT INTO usage_usagerecord (user_id, conversation_id, message_id, request_id, source, model, status,
        prompt_tokens, completion_tokens, billable_tokens, cost, cached, latency_ms, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (request_id) DO NOTHING
"""
# `reserved` never goes below zero: a slow request's reservation may have been released as stale meanwhile.
_QUOTA_SETTLE_SQL = """
    UPDATE usage_quotaperiod
    SET used = used + %s, reserved = CASE WHEN reserved > %s THEN reserved - %s ELSE 0 END
    WHERE id = %s
    RETURNING allowance, used, reserved
"""
_SPEND_ADD_SQL = """
    INSERT INTO usage_spendday (day, shard, cost, requests) VALUES (%s, %s, %s, 1)
    ON CONFLICT (day, shard) DO UPDATE
    SET cost = usage_spendday.cost + EXCLUDED.cost, requests = usage_spendday.requests + 1
"""


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
) -> Settlement:
    """Account for one provider call (or cache hit) exactly once (I2): the usage record, the period's quota
    moved from reserved to used at the actual amount, and the day's spend. Run it inside the transaction that
    saves the answer, so both or neither are written. Plain SQL: it runs after every message."""
    if cached:
        cost = Decimal(0)  # nothing was paid to the provider
        billable = prompt_tokens + completion_tokens if settings.PROMPT_CACHE_HIT_CHARGE == "full" else 0
    else:
        cost = cost_of(model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        billable = prompt_tokens + completion_tokens
    now = timezone.now()
    ops = connection.ops
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _RECORD_INSERT_SQL,
            [
                admission.user_id,
                conversation_id,
                message_id,
                admission.request_id,
                admission.source,
                model,
                status,
                prompt_tokens,
                completion_tokens,
                billable,
                ops.adapt_decimalfield_value(cost, 20, 10),
                cached,
                round((time.monotonic() - admission.admitted_at) * 1000),
                ops.adapt_datetimefield_value(now),
            ],
        )
        recorded = cursor.rowcount == 1
        if recorded:
            reserved_tokens = admission.reserved_tokens
            cursor.execute(_QUOTA_SETTLE_SQL, [billable, reserved_tokens, reserved_tokens, admission.period_id])
            allowance, used, reserved = cursor.fetchone()
            cursor.execute(
                _SPEND_ADD_SQL,
                [
                    ops.adapt_datefield_value(now.date()),
                    admission.user_id % SpendDay.SHARDS,
                    ops.adapt_decimalfield_value(cost, 20, 10),
                ],
            )
        else:  # settled before (a retry): report the period as it is
            period = QuotaPeriod.objects.get(pk=admission.period_id)
            allowance, used, reserved = period.allowance, period.used, period.reserved
    period = QuotaPeriod(allowance=allowance, used=used, reserved=reserved, end=admission.period_end)
    return Settlement(recorded, billable if recorded else 0, quota_meter(period=period))


def limits_settle(*, admission: Admission, settlement: Settlement) -> None:
    """After the commit: the tokens/day limit keeps what was used and gets the rest of the hold back."""
    if settlement.recorded:
        limits.give_back_quietly(admission.tokens_limit, admission.reserved_tokens - settlement.billable_tokens)

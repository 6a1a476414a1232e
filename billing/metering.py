"""Metered usage to Stripe, exactly once (I3): an outbox of Billing Meter events.

    meter_reports_prepare  one transaction, one process at a time: for each metered period, compare what
                           its usage records say should be billed with what was already reported, and write
                           the difference as a MeterReport (at most one unsent per customer)
    meter_reports_send     send due reports, each held by one sender at a time (a lease); marked sent only
                           after Stripe accepted it; errors and 429s back off; Stripe's "duplicate
                           identifier" answer means an earlier attempt got through
    metering_reconcile     recorded vs reported, per customer and period

A report's identifier is derived from what it covers (the period and the running total it brings that
period to), and the running total only moves forward after a report went through, so whatever fails and
retries, each token is reported once. Nothing here runs in a web request.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import stripe
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing.models import MeterReport
from billing.stripe_api import client
from core.db import db_datetime, transaction_lock

logger = logging.getLogger(__name__)

# Stripe accepts meter events up to 35 days old; periods that ended longer ago are left to reconciliation.
REPORTABLE_DAYS = 30
LEASE = timedelta(minutes=2)  # longer than a request to Stripe may take (its client times out first)
MAX_BACKOFF = timedelta(minutes=30)

_METERED_PERIODS_SQL = """
    SELECT q.id, q.user_id, q.start, q."end", q.metered_after, c.id,
           (SELECT COALESCE(SUM(r.billable_tokens), 0) FROM usage_usagerecord r WHERE r.period_id = q.id),
           (SELECT COALESCE(MAX(m.covered_to), 0) FROM billing_meterreport m WHERE m.period_id = q.id)
    FROM usage_quotaperiod q
    JOIN djstripe_customer c ON c.subscriber_id = q.user_id AND c.livemode = %s AND c.date_purged IS NULL
    WHERE q.metered_after IS NOT NULL AND q."end" > %s AND q.start <= %s
    ORDER BY q.start
"""


@dataclass(frozen=True)
class MeteredPeriod:
    period_id: int
    user_id: int
    start: datetime
    end: datetime
    metered_after: int
    customer_id: str
    recorded_tokens: int  # billable tokens of the period's usage records
    reported_to: int  # the running total reports were made up to (sent or not)

    @property
    def metered_tokens(self) -> int:
        """What the period's usage records say Stripe should bill."""
        return max(0, self.recorded_tokens - self.metered_after)


def _metered_periods(*, since: datetime, now: datetime) -> list[MeteredPeriod]:
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(_METERED_PERIODS_SQL, [settings.STRIPE_LIVE_MODE, adapt(since), adapt(now)])
        rows = cursor.fetchall()
    return [
        MeteredPeriod(pid, uid, db_datetime(start), db_datetime(end), after, customer, int(recorded), int(reported))
        for pid, uid, start, end, after, customer, recorded, reported in rows
    ]


def meter_reports_prepare(*, now: datetime | None = None) -> int:
    """Write a MeterReport for every metered period with unreported tokens; returns how many."""
    now = now or timezone.now()
    with transaction.atomic():
        transaction_lock("billing.meter_reports_prepare")
        waiting = set(MeterReport.objects.filter(status=MeterReport.Status.PENDING).values_list("user_id", flat=True))
        reports = []
        for period in _metered_periods(since=now - timedelta(days=REPORTABLE_DAYS), now=now):
            if period.user_id in waiting or period.metered_tokens <= period.reported_to:
                continue
            waiting.add(period.user_id)  # one unsent report per customer; the next period's waits its turn
            reports.append(
                MeterReport(
                    user_id=period.user_id,
                    period_id=period.period_id,
                    stripe_customer_id=period.customer_id,
                    identifier=f"aisaas-period-{period.period_id}-tokens-{period.reported_to}-{period.metered_tokens}",
                    covered_from=period.reported_to,
                    covered_to=period.metered_tokens,
                    value=period.metered_tokens - period.reported_to,
                    # Inside the period, so Stripe bills it in the right invoice.
                    timestamp=min(now, period.end - timedelta(seconds=1)),
                    next_attempt_at=now,
                )
            )
        MeterReport.objects.bulk_create(reports)
    return len(reports)


@dataclass
class SendResult:
    sent: int = 0
    failed: int = 0
    rate_limited: int = 0
    requests: int = 0


def _backoff(attempts: int) -> timedelta:
    return min(MAX_BACKOFF, timedelta(seconds=5 * 2 ** min(attempts, 10)))


BATCH = 200  # reports claimed, and marked sent, per statement


def _not_leased() -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now())


def _claim(report_ids: list[int]) -> list[MeterReport]:
    """Hold a batch of reports for this sender: one conditional UPDATE, so two senders never both send the
    same report; the ones another sender holds are skipped."""
    token = uuid.uuid4()
    MeterReport.objects.filter(_not_leased(), pk__in=report_ids, status=MeterReport.Status.PENDING).update(
        lease_until=timezone.now() + LEASE, leased_by=token
    )
    return list(MeterReport.objects.filter(leased_by=token, status=MeterReport.Status.PENDING).order_by("pk"))


def _mark_sent(report_ids: list[int]) -> None:
    """After Stripe accepted them. Done in batches: if this process dies before, the reports are resent with
    the same identifiers and Stripe's "already exists" answer marks them sent then."""
    if report_ids:
        MeterReport.objects.filter(pk__in=report_ids).update(
            status=MeterReport.Status.SENT, sent_at=timezone.now(), lease_until=None, leased_by=None, last_error=""
        )


def meter_reports_send(*, due_by: datetime | None = None, deadline: float | None = None) -> SendResult:
    """Send the reports due by `due_by` (default: now), each at most once per call. Stops at `deadline`
    (time.monotonic()) and gives back what it held but did not send, so the next run takes it at once."""
    due_by = due_by or timezone.now()
    result = SendResult()
    api = client(max_network_retries=0)  # the outbox retries, with its own backoff
    due = (
        MeterReport.objects.filter(_not_leased(), status=MeterReport.Status.PENDING, next_attempt_at__lte=due_by)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)
    )
    attempted: set[int] = set()
    out_of_time = False
    while not out_of_time:
        batch = list(due.exclude(pk__in=attempted)[:BATCH]) if attempted else list(due[:BATCH])
        if not batch:
            break
        attempted.update(batch)
        sent: list[int] = []
        for report in _claim(batch):
            if deadline is not None and time.monotonic() > deadline:
                out_of_time = True
                MeterReport.objects.filter(pk=report.pk, leased_by=report.leased_by).update(
                    lease_until=None, leased_by=None
                )
                continue
            result.requests += 1
            outcome = _send(api, report)
            if outcome == "sent":
                sent.append(report.pk)
                result.sent += 1
            elif outcome == "rate_limited":
                result.rate_limited += 1
                time.sleep(1)  # Stripe counts per second: let the window pass
            else:
                result.failed += 1
        _mark_sent(sent)
    return result


def _send(api: stripe.StripeClient, report: MeterReport) -> str:
    try:
        api.v1.billing.meter_events.create(
            {
                "event_name": settings.STRIPE_METER_EVENT_NAME,
                "identifier": report.identifier,
                "timestamp": int(report.timestamp.timestamp()),
                "payload": {"stripe_customer_id": report.stripe_customer_id, "value": str(report.value)},
            },
            {"idempotency_key": report.identifier},
        )
    except stripe.InvalidRequestError as error:
        if error.code == "resource_already_exists":  # an earlier attempt got through
            return "sent"
        return _retry_later(report, error, level=logging.ERROR)
    except stripe.RateLimitError as error:
        _retry_later(report, error, level=logging.INFO, delay=timedelta(seconds=1))
        return "rate_limited"
    except stripe.StripeError as error:  # Stripe down, a network error, ...: nothing lost, retried later
        return _retry_later(report, error, level=logging.WARNING)
    return "sent"


def _retry_later(report: MeterReport, error: stripe.StripeError, *, level: int, delay: timedelta | None = None) -> str:
    attempts = report.attempts + 1
    summary = f"{type(error).__name__} {error.http_status or ''} {error.code or ''}".strip()
    logger.log(level, "Meter report %s not accepted (attempt %d): %s", report.identifier, attempts, summary)
    MeterReport.objects.filter(pk=report.pk).update(
        attempts=attempts,
        next_attempt_at=timezone.now() + (delay or _backoff(attempts)),
        lease_until=None,
        leased_by=None,
        last_error=summary[:500],
    )
    return "failed"


@dataclass(frozen=True)
class Discrepancy:
    customer_id: str
    user_id: int
    period_id: int
    period_start: datetime
    recorded: int  # metered tokens the usage records say
    reported: int  # metered tokens Stripe accepted

    @property
    def difference(self) -> int:
        return self.recorded - self.reported


def metering_reconcile(*, since: datetime | None = None) -> list[Discrepancy]:
    """Per customer and metered period: recorded vs reported (sent) tokens. Empty means they all agree."""
    now = timezone.now()
    since = since or now - timedelta(days=400)
    sent = dict(
        MeterReport.objects.filter(status=MeterReport.Status.SENT)
        .values("period_id")
        .annotate(total=Sum("value"))
        .values_list("period_id", "total")
    )
    return [
        Discrepancy(p.customer_id, p.user_id, p.period_id, p.start, p.metered_tokens, sent.get(p.period_id, 0))
        for p in _metered_periods(since=since, now=now)
        if p.metered_tokens != sent.get(p.period_id, 0)
    ]

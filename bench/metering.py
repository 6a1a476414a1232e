"""Metered usage to Stripe at volume: the outbox against a fake Stripe that answers like Stripe, 429 included.

    make bench-metering                       # on embedded PostgreSQL and Redis
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/aisaas_bench REDIS_URL=redis://127.0.0.1:6379/14 \
        python bench/metering.py              # PostgreSQL

Seeds N usage records (default 100,000) across C paying customers (default 10,000) on a plan that meters
every token, then runs the beat task's work (billing.metering: prepare, then send until nothing is due)
against tests/fake_stripe.py, limited like Stripe's live mode to 1,000 requests a second (429 above it).
Reports the Stripe calls made (target: one per customer per interval), 429s, wall time, and checks that
nothing was lost or duplicated (Stripe's meter per customer == what the records say; billing_reconcile
agrees). A second interval adds usage for a tenth of the customers.

Baseline, same run: reporting each usage record as it is written (one meter event per record, the naive
way), on a sample of records, with the same fake Stripe; its figures scale linearly to all N records.
Results: docs/performance.md.
"""

import argparse
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_environment, django_setup  # noqa: E402

EMAIL = "meter-bench-{}@example.com"


def seed(customers: int, records: int):
    """Paying users with a Stripe customer, each with a metered period and its usage records."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone
    from djstripe.models import Customer

    from billing.models import MeterReport
    from usage.models import Plan, QuotaPeriod, UsageRecord, UserPlan

    User = get_user_model()
    old = User.objects.filter(email__startswith="meter-bench-")
    MeterReport.objects.filter(user__in=old).delete()
    UsageRecord.objects.filter(user__in=old).delete()
    Customer.objects.filter(subscriber__in=old).delete()
    old.delete()

    plan, _ = Plan.objects.update_or_create(
        slug="bench-metered",
        defaults={
            "name": "Bench metered",
            "monthly_token_allowance": 10**12,
            "requests_per_minute": 10**6,
            "requests_per_day": 10**8,
            "tokens_per_day": 10**12,
            "max_tokens_per_request": 1024,
            "metering": Plan.Metering.ALL,
            "stripe_lookup_key": "bench_metered",
        },
    )
    now = timezone.now()
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    with transaction.atomic():
        users = User.objects.bulk_create(
            [User(email=EMAIL.format(i), password="!", is_active=True) for i in range(customers)], batch_size=2000
        )
        users = list(User.objects.filter(email__startswith="meter-bench-").order_by("pk"))
        UserPlan.objects.filter(user__in=users).update(plan=plan, cycle_anchor=start)
        UserPlan.objects.bulk_create(
            [UserPlan(user=u, plan=plan, cycle_anchor=start) for u in users], ignore_conflicts=True, batch_size=2000
        )
        Customer.objects.bulk_create(
            [
                Customer(id=f"cus_bench{u.pk}", livemode=False, subscriber=u, email=u.email, stripe_data={})
                for u in users
            ],
            batch_size=2000,
        )
        periods = QuotaPeriod.objects.bulk_create(
            [
                QuotaPeriod(user=u, start=start, end=end, allowance=plan.period_token_limit, metered_after=0)
                for u in users
            ],
            batch_size=2000,
        )
    add_usage(list(zip(users, periods, strict=True)), records)
    return list(zip(users, periods, strict=True))


def add_usage(owners, records: int) -> None:
    from django.utils import timezone

    from usage.models import UsageRecord

    rng = random.Random(records)
    batch = []
    for number in range(records):
        user, period = owners[number % len(owners)]
        tokens = rng.randint(20, 2000)
        batch.append(
            UsageRecord(
                user=user,
                period=period,
                request_id=f"meter-bench-{time.monotonic_ns()}-{number}",
                source="chat",
                model="demo-mini",
                status="complete",
                prompt_tokens=tokens // 3,
                completion_tokens=tokens - tokens // 3,
                billable_tokens=tokens,
                cost=0,
                latency_ms=1,
                created_at=timezone.now(),
            )
        )
        if len(batch) == 5000:
            UsageRecord.objects.bulk_create(batch)
            batch = []
    UsageRecord.objects.bulk_create(batch)


def interval(fake, senders: int) -> dict:
    """One beat interval's work, run until nothing is due (the task itself stops at its deadline and the
    next minute carries on), by `senders` concurrent workers (as with several Celery workers)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection
    from django.utils import timezone

    from billing import metering
    from billing.models import MeterReport

    calls_before, events_before = len(fake.requests), len(fake.meter_events)
    started = time.perf_counter()
    prepared = metering.meter_reports_prepare()
    prepare_s = time.perf_counter() - started

    def send_until_done() -> int:
        rate_limited = 0
        try:
            while MeterReport.objects.filter(status=MeterReport.Status.PENDING).exists():
                # A rate-limited report is due again a second later; look that far ahead.
                result = metering.meter_reports_send(due_by=timezone.now() + timedelta(seconds=1))
                rate_limited += result.rate_limited
                if not result.requests:
                    time.sleep(0.05)  # the rest is held by other senders
        finally:
            connection.close()
        return rate_limited

    with ThreadPoolExecutor(senders) as pool:
        rate_limited = sum(pool.map(lambda _: send_until_done(), range(senders)))
    wall_s = time.perf_counter() - started
    calls = len(fake.requests) - calls_before
    return {
        "reports": prepared,
        "stripe_calls": calls,
        "accepted": len(fake.meter_events) - events_before,
        "rate_limited_429": rate_limited,
        "prepare_s": prepare_s,
        "wall_s": wall_s,
        "calls_per_s": calls / wall_s if wall_s else float("nan"),
    }


def naive_baseline(fake, owners, sample: int) -> dict:
    """One meter event per usage record, sent as each is written: what the outbox replaces."""
    from billing.stripe_api import client

    api = client(max_network_retries=0)
    import stripe

    calls = rate_limited = 0
    started = time.perf_counter()
    for number in range(sample):
        user, _ = owners[number % len(owners)]
        while True:
            calls += 1
            try:
                api.v1.billing.meter_events.create(
                    {
                        "event_name": "bench_naive",
                        "identifier": f"naive-{time.monotonic_ns()}-{number}",
                        "payload": {"stripe_customer_id": f"cus_bench{user.pk}", "value": "1"},
                    }
                )
                break
            except stripe.RateLimitError:
                rate_limited += 1
                time.sleep(0.05)
    wall_s = time.perf_counter() - started
    return {"records": sample, "stripe_calls": calls, "rate_limited_429": rate_limited, "wall_s": wall_s}


def verify(fake) -> tuple[bool, int]:
    """Stripe's meter per customer == the usage records; and what billing_reconcile finds."""
    from django.db.models import Sum

    from billing.metering import metering_reconcile
    from usage.models import UsageRecord

    recorded = {
        f"cus_bench{row['user_id']}": row["total"]
        for row in UsageRecord.objects.filter(user__email__startswith="meter-bench-")
        .values("user_id")
        .annotate(total=Sum("billable_tokens"))
    }
    metered = {k: v for k, v in fake.metered().items() if k in recorded}
    return metered == recorded, len(metering_reconcile())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=3000)
    parser.add_argument("--rate-limit", type=int, default=1000, help="Stripe's requests per second before 429")
    parser.add_argument("--senders", type=int, default=1, help="concurrent senders (Celery workers)")
    args = parser.parse_args()

    env = bench_environment()
    django_setup(env)
    import stripe
    from django.conf import settings

    from tests.fake_stripe import SECRET_KEY, FakeStripe

    fake = FakeStripe().start()
    fake.rate_limit_per_second = args.rate_limit
    stripe.api_base = fake.url
    settings.STRIPE_TEST_SECRET_KEY = SECRET_KEY

    print(
        f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}; "
        f"{args.records:,} usage records across {args.customers:,} customers; Stripe limit {args.rate_limit}/s"
    )
    started = time.perf_counter()
    owners = seed(args.customers, args.records)
    print(f"seeded in {time.perf_counter() - started:.1f} s")

    naive = naive_baseline(fake, owners, args.naive_sample)
    per_record_s = naive["wall_s"] / naive["records"]
    print(
        f"baseline, one event per record: {naive['records']:,} records -> {naive['stripe_calls']:,} calls "
        f"({naive['rate_limited_429']:,} answered 429) in {naive['wall_s']:.1f} s; "
        f"all {args.records:,} records: {args.records:,}+ calls, ~{per_record_s * args.records:.0f} s"
    )
    fake.meter_events.clear()

    first = interval(fake, args.senders)
    print("interval 1 (all usage):", {k: round(v, 2) if isinstance(v, float) else v for k, v in first.items()})
    add_usage(owners[: max(1, len(owners) // 10)], args.records // 10)
    second = interval(fake, args.senders)
    print(
        "interval 2 (a tenth of the customers used more):",
        {k: round(v, 2) if isinstance(v, float) else v for k, v in second.items()},
    )
    matches, discrepancies = verify(fake)
    print(
        f"Stripe's meter == usage records for every customer: {matches}; billing_reconcile differences: {discrepancies}"
    )
    fake.stop()
    if not matches or discrepancies:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Staff analytics at volume: the server side of the token analytics page, a user's page and the user list.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/aisaas_bench REDIS_URL=redis://127.0.0.1:6379/14 \
        python bench/analytics.py [--records 1000000] [--users 10000] [--also 10000000]

Seeds usage records (default 1,000,000) across users (default 10,000), spread over the last 30 days and two
models, with their rollup (`usage_rollup_rebuild`, timed too); then requests each page through Django's test
client as a superuser (the whole server side: middleware, admin, queries, template) and reports p50/max
time and the number of queries. It does the same first at a tenth of the records, to show the query count
does not grow with the data. Target: each page at most 300 ms at 1M records. Results: docs/performance.md.
"""

import argparse
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_environment, django_setup  # noqa: E402

EMAIL = "analytics-bench-{}@example.com"


def seed_users(count: int) -> list[int]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from usage.models import Plan, QuotaPeriod, UsageDaily, UsageRecord, UserPlan
    from usage.selectors import calendar_month

    User = get_user_model()
    old = User.objects.filter(email__startswith="analytics-bench-")
    UsageDaily.objects.filter(user__in=old).delete()
    UsageRecord.objects.filter(user__in=old).delete()
    QuotaPeriod.objects.filter(user__in=old).delete()
    old.delete()
    with connection.cursor() as cursor:  # any other bench's leftovers would blur the figures
        cursor.execute("TRUNCATE usage_usagedaily, usage_spendday, usage_usagerecord CASCADE")
    User.objects.bulk_create(
        [User(email=EMAIL.format(i), password="!", is_active=True) for i in range(count)], batch_size=5000
    )
    ids = list(User.objects.filter(email__startswith="analytics-bench-").order_by("pk").values_list("pk", flat=True))
    pro = Plan.objects.get(slug="pro")
    UserPlan.objects.filter(user_id__in=ids).update(plan=pro)
    UserPlan.objects.bulk_create([UserPlan(user_id=pk, plan=pro) for pk in ids], ignore_conflicts=True, batch_size=5000)
    start, end = calendar_month(timezone.now())
    QuotaPeriod.objects.bulk_create(
        [
            QuotaPeriod(user_id=pk, start=start, end=end, allowance=pro.period_token_limit, used=(pk * 7919) % 10**6,
                        cost=Decimal((pk * 7919) % 10**6) / 10**6)
            for pk in ids
        ],
        batch_size=5000,
    )  # fmt: skip
    return ids


def seed_records(user_ids: list[int], count: int, offset: int) -> None:
    """`count` records, spread evenly over the users, the last 30 days and two models: one INSERT ... SELECT."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO usage_usagerecord (user_id, request_id, source, model, status, prompt_tokens,
                completion_tokens, billable_tokens, cost, cached, latency_ms, created_at)
            SELECT u.id, 'analytics-bench-' || g, 'chat',
                   CASE WHEN g %% 3 = 0 THEN 'demo-large' ELSE 'demo-mini' END, 'complete',
                   10 + g %% 500, 5 + g %% 900, 15 + g %% 500 + g %% 900,
                   ((10 + g %% 500) * 0.15 + (5 + g %% 900) * 0.60) / 1000000, g %% 10 = 0, 120,
                   now() - ((g * 7919) %% (30 * 24 * 3600)) * interval '1 second'
            FROM generate_series(%s::bigint, %s::bigint) AS g
            JOIN unnest(%s::bigint[]) WITH ORDINALITY AS u(id, n) ON u.n = 1 + (g * 31) %% %s::bigint
            """,
            [offset + 1, offset + count, user_ids, len(user_ids)],
        )


def rebuild() -> float:
    from django.db import connection
    from django.utils import timezone

    from usage.services import usage_rollup_rebuild

    today = timezone.now().date()
    started = time.perf_counter()
    usage_rollup_rebuild(first_day=today - timedelta(days=31), last_day=today)
    elapsed = time.perf_counter() - started
    with connection.cursor() as cursor:
        # As autovacuum would after such a load; measuring while it runs would time the vacuum too.
        cursor.execute("VACUUM (ANALYZE) usage_usagerecord, usage_usagedaily, usage_spendday, usage_quotaperiod")
    return elapsed


def time_pages(client, heaviest_user_id: int, runs: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    pages = {
        "analytics page": reverse("admin:usage_usagedaily_changelist"),
        "user's page": reverse("admin:usage_user_analytics", args=[heaviest_user_id]),
        "user list": reverse("admin:users_user_changelist"),
        "user list sorted by cost": reverse("admin:users_user_changelist") + "?o=-4",
    }
    results = {}
    for name, url in pages.items():
        client.get(url)  # warm: templates compiled, statements prepared
        timings = []
        for _ in range(runs):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                timings.append(time.perf_counter() - started)
            assert response.status_code == 200, (name, response.status_code, response.get("Location"))
        results[name] = {
            "p50_ms": statistics.median(timings) * 1000,
            "max_ms": max(timings) * 1000,
            "queries": len(queries.captured_queries),
        }
    return results


def report(label: str, results: dict) -> None:
    print(label)
    for name, row in results.items():
        print(f"  {name:26s} p50 {row['p50_ms']:7.1f} ms  max {row['max_ms']:7.1f} ms  {row['queries']} queries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--also", type=int, default=0, help="then grow to this many records and measure again")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    env = bench_environment()
    if "postgres" not in env["DATABASE_URL"]:
        sys.exit("bench/analytics.py needs PostgreSQL: set BENCH_DATABASE_URL (and REDIS_URL)")
    django_setup({**env, "ALLOWED_HOSTS": "testserver", "LOG_LEVEL": "ERROR"})
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db.models import Sum
    from django.test import Client

    from usage.models import UsageDaily

    settings.ALLOWED_HOSTS = ["testserver"]
    # Static URLs without the manifest collectstatic would write: the pages' server side is what is measured.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    User = get_user_model()
    admin_user, _ = User.objects.get_or_create(
        email="bench-staff@example.com", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(secure=True)
    client.force_login(admin_user)

    started = time.perf_counter()
    users = seed_users(args.users)
    print(f"{len(users):,} users in {time.perf_counter() - started:.1f} s")
    done = 0
    for target in [max(1, args.records // 10), args.records, *([args.also] if args.also else [])]:
        started = time.perf_counter()
        seed_records(users, target - done, done)
        done = target
        seeded = time.perf_counter() - started
        rebuilt = rebuild()
        rollup_rows = UsageDaily.objects.count()
        heaviest = (
            UsageDaily.objects.values("user_id").annotate(t=Sum("billable_tokens")).order_by("-t").first()["user_id"]
        )
        print(f"\n{done:,} usage records (seeded in {seeded:.1f} s), {rollup_rows:,} rollup rows "
              f"(rebuilt in {rebuilt:.1f} s)")  # fmt: skip
        report(f"pages at {done:,} records:", time_pages(client, heaviest, args.runs))


if __name__ == "__main__":
    main()

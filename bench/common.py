"""What the benchmarks share: the settings they run under, Django set-up, percentiles, the bench plan."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def compared_ms(ours: tuple[str, list[float]], baseline: tuple[str, list[float]], metric: str = "") -> dict:
    """p50 and p99 of both sides (seconds in, milliseconds out) and what ours adds, e.g. with metric "ttft":
    {"direct_ttft_p50_ms", ..., "ws_ttft_p99_ms", "added_ttft_p50_ms", "added_ttft_p99_ms"}."""
    metric = f"_{metric}" if metric else ""
    row = {}
    for label, values in (baseline, ours):
        for q in (50, 99):
            row[f"{label}{metric}_p{q}_ms"] = percentile(values, q) * 1000
    for q in (50, 99):
        row[f"added{metric}_p{q}_ms"] = row[f"{ours[0]}{metric}_p{q}_ms"] - row[f"{baseline[0]}{metric}_p{q}_ms"]
    return row


def bench_environment() -> dict[str, str]:
    """Production settings (DEBUG off) on the PostgreSQL and Redis that BENCH_DATABASE_URL (else DATABASE_URL) and
    REDIS_URL name: the embedded ones under `make bench-*` (aisaas.embedded), or servers of your own."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL") or os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        # Replaced by the dev LLM's address when a server starts.
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "LLM_API_KEY": "bench-key",
        "LOG_LEVEL": "WARNING",
    }


def ensure_database(url: str) -> None:
    """Create the bench's PostgreSQL database if it does not exist yet."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def django_setup(env: dict[str, str]) -> None:
    """Migrate the bench database and set Django up in this process with `env`."""
    ensure_database(env["DATABASE_URL"])
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env={**os.environ, **env}, check=True)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aisaas.settings")
    import django

    django.setup()


def bench_plan():
    """A plan no bench run reaches the limits of: the whole gate runs, nothing is refused."""
    from usage.models import Plan

    plan, _ = Plan.objects.update_or_create(
        slug="bench",
        defaults={
            "name": "Bench",
            "monthly_token_allowance": 10**15,
            "requests_per_minute": 10**6,
            "requests_per_day": 10**8,
            "tokens_per_day": 10**15,
            "max_tokens_per_request": 1024,
        },
    )
    return plan

"""aisaas beside the LiteLLM proxy, the best-known open-source gateway, in one interleaved run.

    make bench-peer                           # on embedded PostgreSQL and Redis
    python bench/peer.py --rounds 3           # beside servers DATABASE_URL/REDIS_URL (or BENCH_DATABASE_URL) name

Both gateways stand in front of the same dev LLM, are called with the official `openai` SDK on their
OpenAI-compatible /v1/chat/completions, streamed, and do comparable work on every call:

  aisaas    daphne with production settings: the API key, rate limits, the spend cap, the token quota
            reservation, moderation, then the answer, settled and metered in PostgreSQL, limits in Redis.
  LiteLLM   its proxy (litellm[proxy] LITELLM_VERSION, installed on demand into a virtualenv of its own under
            bench/results/, never into the project's requirements), with a key that has a budget, rpm and tpm
            limits and a model list, checked by its own budget, model-access and rate-limit checks (its custom
            auth with common checks: its database-backed keys need Prisma, which cannot be set up offline), its
            limiter and spend counters in the same Redis, and OpenAI moderation as a pre-call guardrail.

Measured, each gateway against the dev LLM called directly in the same rounds (interleaved):
  - added time to first token, p50 and p99, at 1, 10 and 50 concurrent streams;
  - requests per second at 50 concurrent clients (short answers, so the gateways' own work dominates);
  - CPU seconds per 1,000 requests of each gateway's own processes during that run (ours: daphne and the
    PostgreSQL backends; theirs: the proxy's process tree; the shared Redis and the dev LLM are left out).

Prints aisaas/LiteLLM ratios (the median over --rounds runs) and, last, one line with every ratio. Exits 1 when
one misses its target: added TTFT p50 <= 0.5x at 1 stream and <= 0.25x at 10 and 50; requests/s >= 2x;
CPU per request <= 0.4x. Everything runs on this machine (loopback only) and stops by itself. Results:
docs/performance.md.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_environment, percentile  # noqa: E402
from bench.ttft import direct_stream, prepare_database  # noqa: E402
from tests.servers import Server, free_port, start_daphne, start_devllm  # noqa: E402

LITELLM_VERSION = "1.106.12"  # not a 1.107.x release
LITELLM_HOME = ROOT / "bench" / "results" / "litellm"
MODEL = "demo-mini"
CONCURRENCY = (1, 10, 50)
# Targets: ours / LiteLLM.
TARGETS = {"ttft_p50@1": ("<=", 0.5), "ttft_p50@10": ("<=", 0.25), "ttft_p50@50": ("<=", 0.25),
           "requests_per_second": (">=", 2.0), "cpu_per_request": ("<=", 0.4)}  # fmt: skip
# A short answer at once: the throughput run measures the gateways, not the model.
SHORT = "[devllm tokens=8 interval_ms=0 ttft_ms=0]"


def litellm_python() -> Path:
    """The LiteLLM proxy's own virtualenv, made and filled on first use."""
    venv = LITELLM_HOME / "venv"
    python = venv / "bin" / "python"
    installed = venv / f".litellm-{LITELLM_VERSION}"
    if not installed.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv.relative_to(ROOT)} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"], check=True
        )
        installed.touch()
    return python


def start_litellm(*, devllm: Server, keys: list[str], redis_url: str) -> tuple[Server, Path]:
    """The proxy on a free port, configured as the module docstring says; returns it and its folder."""
    folder = LITELLM_HOME / f"run-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    # Its custom auth: each of our keys is a LiteLLM key with a budget, limits and a model list (as a
    # database-backed virtual key would be), checked by LiteLLM's own common checks.
    (folder / "bench_auth.py").write_text(
        textwrap.dedent(
            f"""
            from litellm.proxy._types import UserAPIKeyAuth

            KEYS = {json.dumps({key: hashlib.sha256(key.encode()).hexdigest() for key in keys})}


            async def user_api_key_auth(request, api_key):
                token = KEYS.get(api_key.removeprefix("Bearer ").strip())
                if token is None:
                    raise Exception("unknown key")
                return UserAPIKeyAuth(api_key=api_key, token=token, max_budget=1000.0, rpm_limit=1_000_000,
                                      tpm_limit=10**12, models=["{MODEL}"])
            """
        )
    )
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{devllm.url}/v1",
                    "api_key": "bench-key",
                    "input_cost_per_token": 0.15e-6,
                    "output_cost_per_token": 0.60e-6,
                },
            }
        ],
        "guardrails": [
            {
                "guardrail_name": "moderation",
                "litellm_params": {
                    "guardrail": "openai_moderation",
                    "mode": "pre_call",
                    "api_base": f"{devllm.url}/v1",
                    "api_key": "bench-key",
                    "default_on": True,
                },
            }
        ],
        "litellm_settings": {"enable_post_custom_auth_checks": True, "drop_params": True},
        "general_settings": {
            "master_key": f"sk-{secrets.token_hex(32)}",  # it refuses to start without one; never used here
            "custom_auth": "bench_auth.user_api_key_auth",
            "custom_auth_run_common_checks": True,
            "coordination_redis": {"url": redis_url},
        },
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    port = free_port()
    process = subprocess.Popen(
        [
            str(litellm_python()),
            "-m",
            "litellm.proxy.proxy_cli",
            "--config",
            "config.json",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        cwd=folder,
        # Not our DATABASE_URL: LiteLLM would take it for its own (Prisma) database.
        env={
            **{name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")},
            "PYTHONPATH": str(folder),
            "LITELLM_LOG": "ERROR",
        },
        stdout=(folder / "out.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    server = Server(process, port)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"LiteLLM exited with {process.returncode}: see {folder / 'out.log'}")
        try:
            import urllib.request

            with urllib.request.urlopen(f"{server.url}/health/liveliness", timeout=1):  # noqa: S310 (loopback)
                return server, folder
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"LiteLLM did not start within 180 s: see {folder / 'out.log'}")


def process_tree_cpu(processes: list[psutil.Process]) -> float:
    """CPU seconds (user + system) used so far by these processes and their children."""
    total = 0.0
    for process in processes:
        for each in [process, *process.children(recursive=True)]:
            try:
                times = each.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def postgres_cpu(database_pid: int | None) -> float:
    """CPU seconds of the PostgreSQL server's processes (the backends our gateway uses among them)."""
    return process_tree_cpu([psutil.Process(database_pid)]) if database_pid else 0.0


def postmaster_pid(database_url: str) -> int | None:
    import psycopg

    with psycopg.connect(database_url) as connection:
        backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
    parent = psutil.Process(backend).parent()
    return parent.pid if parent is not None else None


async def streams_at(concurrency: int, gateways: dict, rounds: int, rng: random.Random) -> dict[str, list[float]]:
    """TTFTs of each path (direct and each gateway) at `concurrency` streams at once, the paths taking turns
    round by round in a shuffled order."""
    ttfts = {name: [] for name in gateways}
    for number in range(rounds):
        order = list(gateways)
        rng.shuffle(order)
        for name in order:
            clients = gateways[name][:concurrency]
            results = await asyncio.gather(
                *(direct_stream(client, MODEL, f"Question {secrets.token_hex(4)} {number}") for client in clients),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise RuntimeError(f"{name}: {result!r}")
                started, arrivals, _ = result
                ttfts[name].append(arrivals[0] - started)
    return ttfts


async def throughput(clients: list, requests: int) -> float:
    """Requests per second of `requests` short streamed answers through `clients`, all busy at once."""
    queue = asyncio.Queue()
    for number in range(requests):
        queue.put_nowait(number)

    async def worker(client):
        while not queue.empty():
            number = queue.get_nowait()
            _, arrivals, _ = await direct_stream(client, MODEL, f"Fast {secrets.token_hex(4)} {number} {SHORT}")
            if not arrivals:
                raise RuntimeError("an answer without text")

    started = time.monotonic()
    await asyncio.gather(*(worker(client) for client in clients))
    return requests / (time.monotonic() - started)


async def one_round(args, clients: dict, cpu_of: dict, number: int) -> dict:
    rng = random.Random(number)
    figures = {}
    for concurrency in CONCURRENCY:
        rounds = max(3, args.streams // concurrency)
        ttfts = await streams_at(concurrency, clients, rounds, rng)
        direct = percentile(ttfts["direct"], 50), percentile(ttfts["direct"], 99)
        for name in ("aisaas", "litellm"):
            figures[f"{name}_ttft_p50@{concurrency}"] = (percentile(ttfts[name], 50) - direct[0]) * 1000
            figures[f"{name}_ttft_p99@{concurrency}"] = (percentile(ttfts[name], 99) - direct[1]) * 1000
    for name in ("aisaas", "litellm"):
        await throughput(clients[name][:50], 100)  # warm
        cpu_before = cpu_of[name]()
        figures[f"{name}_requests_per_second"] = await throughput(clients[name][:50], args.requests)
        figures[f"{name}_cpu_per_1000"] = (cpu_of[name]() - cpu_before) / args.requests * 1000
    return figures


def ratios(figures: dict) -> dict:
    result = {}
    for concurrency in CONCURRENCY:
        key = f"ttft_p50@{concurrency}"
        result[key] = figures[f"aisaas_{key}"] / figures[f"litellm_{key}"]
    result["requests_per_second"] = figures["aisaas_requests_per_second"] / figures["litellm_requests_per_second"]
    result["cpu_per_request"] = figures["aisaas_cpu_per_1000"] / figures["litellm_cpu_per_1000"]
    return result


def print_round(number: int, figures: dict, ratio: dict) -> None:
    print(f"round {number + 1}:", flush=True)
    for concurrency in CONCURRENCY:
        print(
            f"  {concurrency:>2} streams: added TTFT p50 aisaas {figures[f'aisaas_ttft_p50@{concurrency}']:+.1f} ms, "
            f"LiteLLM {figures[f'litellm_ttft_p50@{concurrency}']:+.1f} ms (ratio "
            f"{ratio[f'ttft_p50@{concurrency}']:.2f}) | p99 aisaas {figures[f'aisaas_ttft_p99@{concurrency}']:+.1f} "
            f"ms, LiteLLM {figures[f'litellm_ttft_p99@{concurrency}']:+.1f} ms",
            flush=True,
        )
    print(
        f"  requests/s aisaas {figures['aisaas_requests_per_second']:.0f}, LiteLLM "
        f"{figures['litellm_requests_per_second']:.0f} (ratio {ratio['requests_per_second']:.2f}) | CPU s per 1,000 "
        f"requests aisaas {figures['aisaas_cpu_per_1000']:.1f}, LiteLLM {figures['litellm_cpu_per_1000']:.1f} "
        f"(ratio {ratio['cpu_per_request']:.2f})",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="whole runs; the ratios reported are their median")
    parser.add_argument("--streams", type=int, default=60, help="streams per path per concurrency level a round")
    parser.add_argument("--requests", type=int, default=1000, help="requests per gateway in the throughput run")
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    args = parser.parse_args()
    import openai

    env = bench_environment()
    keys = prepare_database(env, max(CONCURRENCY))[1]
    database_pid = postmaster_pid(env["DATABASE_URL"])
    devllm = start_devllm("--tokens", "32", "--interval-ms", "20", "--ttft-ms", "100")
    ours = litellm = None
    try:
        ours = start_daphne({**env, "LLM_BASE_URL": f"{devllm.url}/v1", "MODERATION_ENABLED": "true"})
        print("starting the LiteLLM proxy (about 40 s)", flush=True)
        litellm, _ = start_litellm(devllm=devllm, keys=keys, redis_url=env["REDIS_URL"])

        def sdk(base_url: str, key: str):
            return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=60)

        clients = {
            "direct": [sdk(devllm.url, "bench-key") for _ in keys],
            "aisaas": [sdk(ours.url, key) for key in keys],
            "litellm": [sdk(litellm.url, key) for key in keys],
        }
        ours_process, litellm_process = psutil.Process(ours.process.pid), psutil.Process(litellm.process.pid)
        cpu_of = {
            "aisaas": lambda: process_tree_cpu([ours_process]) + postgres_cpu(database_pid),
            "litellm": lambda: process_tree_cpu([litellm_process]),
        }
        everything, all_ratios = [], []

        async def run_all():
            for number in range(args.rounds):
                figures = await one_round(args, clients, cpu_of, number)
                ratio = ratios(figures)
                print_round(number, figures, ratio)
                everything.append(figures)
                all_ratios.append(ratio)

        asyncio.run(run_all())
    finally:
        for server in (litellm, ours, devllm):
            if server is not None:
                server.stop()
    median = {name: statistics.median(ratio[name] for ratio in all_ratios) for name in TARGETS}
    missed = [
        name
        for name, (sense, target) in TARGETS.items()
        if not (median[name] <= target if sense == "<=" else median[name] >= target)
    ]
    if args.json:
        args.json.write_text(json.dumps({"rounds": everything, "median_ratios": median}, indent=2))
    print(
        "ratios aisaas/LiteLLM, median of "
        f"{args.rounds}: "
        + ", ".join(f"{name} {median[name]:.2f} ({TARGETS[name][0]} {TARGETS[name][1]})" for name in TARGETS)
        + (f"; MISSED: {', '.join(missed)}" if missed else "; all targets met")
    )
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()

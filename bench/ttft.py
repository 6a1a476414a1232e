"""Time to first token: the dev LLM straight through the `openai` client vs. the same prompts through our
websocket (daphne, session auth, persistence, coalesced streaming), or with `--path api` through our
OpenAI-compatible API (the same `openai` client pointed at /v1 with an API key), at several concurrency
levels, in one run.

    make bench-ttft                           # on embedded PostgreSQL and Redis
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/aisaas_bench REDIS_URL=redis://127.0.0.1:6379/14 \
        python bench/ttft.py                  # production settings (DEBUG off): PostgreSQL + Redis

Everything runs on this machine (loopback only) and stops by itself. Results: docs/performance.md.
"""

import argparse
import asyncio
import functools
import itertools
import json
import os
import random
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_environment, bench_plan, compared_ms, django_setup, percentile  # noqa: E402
from tests.servers import start_daphne, start_devllm  # noqa: E402

SYSTEM = "You are a helpful assistant. You are talking to bench. Today is 2026-01-01."


RUN_ID = secrets.token_hex(4)


def prepare_database(env: dict[str, str], users: int) -> tuple[list[str], list[str]]:
    """Migrate the bench database and sign in `users` users (on the bench plan); returns their session cookies
    and an API key for each."""
    django_setup(env)
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from usage.services import plan_change
    from users.services import api_key_create, user_create_verified

    plan = bench_plan()
    cookies, keys = [], []
    for number in range(users):
        user = user_create_verified(email=f"bench{number}@example.com", password="bench-password-123")
        plan_change(user=user, plan=plan)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(session.session_key)
        user.api_keys.all().delete()
        keys.append(api_key_create(user=user, name="bench")[1])
    return cookies, keys


async def direct_stream(client, model: str, prompt: str) -> tuple[float, list[float], int]:
    """One streamed answer through the `openai` client: when it was requested and when each piece of text
    arrived (`time.monotonic()`, one clock for every process), and how many pieces."""
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        max_tokens=1024,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    return started, arrivals, len(arrivals)


async def socket_stream(socket, prompt: str) -> tuple[float, list[float], int]:
    """One answer through our websocket, reported as direct_stream reports (a piece: a delta frame)."""
    started = time.monotonic()
    await socket.send(json.dumps({"type": "message", "conversation": None, "content": prompt}))
    arrivals, frames = [], 0
    while True:
        frame = json.loads(await socket.recv())
        if frame["type"] == "delta":
            arrivals.append(time.monotonic())
            frames += 1
        elif frame["type"] == "end":
            if frame["status"] != "complete":
                raise RuntimeError(f"stream ended {frame['status']}")
            break
        elif frame["type"] == "error":
            raise RuntimeError(frame["code"])
    return started, arrivals, frames


async def simulated_user(stream_one, results: dict, number: int, pauses: list[float]) -> None:
    """One user (or developer): pause, stream an answer, repeat. `stream_one(prompt)` is either path."""
    for round_number, pause in enumerate(pauses):
        await asyncio.sleep(pause)
        try:
            # Unique per run: a prompt seen before would be answered from the prompt cache.
            started, arrivals, frames = await stream_one(f"Question {RUN_ID} {round_number}-{number}")
        except Exception as error:
            if not results["errors"]:
                print(f"first error: {error!r}", flush=True)
            results["errors"] += 1
            continue
        results["ttft"].append(arrivals[0] - started)
        results["gaps"].extend(b - a for a, b in itertools.pairwise(arrivals))
        results["frames"] += frames


async def run(args, env: dict[str, str], cookies: list[str], keys: list[str]) -> dict:
    import openai
    import websockets

    devllm = start_devllm(
        "--tokens", str(args.tokens), "--interval-ms", str(args.interval_ms), "--ttft-ms", str(args.ttft_ms)
    )
    moderation = "false" if args.no_moderation else "true"
    web = start_daphne(
        {**env, "LLM_BASE_URL": f"{devllm.url}/v1", "LLM_API_KEY": "bench-key", "MODERATION_ENABLED": moderation}
    )
    client = openai.AsyncOpenAI(base_url=f"{devllm.url}/v1", api_key="bench-key", max_retries=0)
    results = {}
    try:
        for concurrency in args.concurrency:
            if args.path == "api":
                ours_streams = [
                    functools.partial(
                        direct_stream,
                        openai.AsyncOpenAI(base_url=f"{web.url}/v1", api_key=key, max_retries=0),
                        "demo-mini",
                    )
                    for key in keys[:concurrency]
                ]
                sockets = []
            else:
                sockets = [
                    await websockets.connect(
                        f"ws://127.0.0.1:{web.port}/ws/chat/",
                        origin=f"http://127.0.0.1:{web.port}",
                        additional_headers={"Cookie": f"sessionid={cookie}"},
                        max_size=None,
                    )
                    for cookie in cookies[:concurrency]
                ]
                ours_streams = [functools.partial(socket_stream, socket) for socket in sockets]
            direct = {"ttft": [], "gaps": [], "errors": 0, "frames": 0}
            ours = {"ttft": [], "gaps": [], "errors": 0, "frames": 0}
            rounds = max(2, args.streams // concurrency)
            # Warm up both paths (connections, imports, first queries) before measuring.
            await asyncio.gather(*(direct_stream(client, "demo-mini", "warm up") for _ in range(concurrency)))
            await asyncio.gather(*(stream_one("warm up") for stream_one in ours_streams))

            # Each simulated user pauses before each message: 0 in --burst mode (every stream starts in the
            # same instant), else a random think time. Both paths get the very same pauses.
            rng = random.Random(concurrency)
            pauses = [
                [0.0 if args.burst else rng.uniform(0, args.think_ms / 1000) for _ in range(rounds)]
                for _ in range(concurrency)
            ]
            await asyncio.gather(
                *(
                    simulated_user(functools.partial(direct_stream, client, "demo-mini"), direct, n, pauses[n])
                    for n in range(concurrency)
                )
            )
            await asyncio.gather(
                *(simulated_user(stream_one, ours, n, pauses[n]) for n, stream_one in enumerate(ours_streams))
            )
            for socket in sockets:
                await socket.close()
            results[concurrency] = summarize(direct, ours, args.tokens)
            print_row(concurrency, results[concurrency])
    finally:
        web.stop()
        devllm.stop()
    return results


def summarize(direct: dict, ours: dict, tokens: int) -> dict:
    ms = 1000
    streams = len(ours["ttft"])
    return {
        "streams": streams,
        **compared_ms(("ws", ours["ttft"]), ("direct", direct["ttft"]), metric="ttft"),
        "direct_gap_p50_ms": percentile(direct["gaps"], 50) * ms,
        "direct_gap_p99_ms": percentile(direct["gaps"], 99) * ms,
        "ws_frame_gap_p50_ms": percentile(ours["gaps"], 50) * ms,
        "ws_frame_gap_p99_ms": percentile(ours["gaps"], 99) * ms,
        # Per token, so coalescing (several tokens a frame) is not mistaken for speed or slowness.
        "added_gap_per_token_ms": (
            statistics.fmean(ours["gaps"]) * (ours["frames"] - streams) / max(1, streams * (tokens - 1))
            - statistics.fmean(direct["gaps"])
        )
        * ms
        if ours["gaps"] and direct["gaps"]
        else float("nan"),
        "tokens_per_frame": streams * tokens / max(1, ours["frames"]),
        "errors_direct": direct["errors"],
        "errors_ws": ours["errors"],
    }


def print_row(concurrency: int, row: dict) -> None:
    print(
        f"c={concurrency:<3} streams={row['streams']:<4} "
        f"TTFT p50 direct {row['direct_ttft_p50_ms']:.1f} ms / ws {row['ws_ttft_p50_ms']:.1f} ms "
        f"(added {row['added_ttft_p50_ms']:+.1f} ms) | p99 direct {row['direct_ttft_p99_ms']:.1f} / "
        f"ws {row['ws_ttft_p99_ms']:.1f} (added {row['added_ttft_p99_ms']:+.1f}) | "
        f"gap p50/p99 direct {row['direct_gap_p50_ms']:.1f}/{row['direct_gap_p99_ms']:.1f} ms, "
        f"ws frames {row['ws_frame_gap_p50_ms']:.1f}/{row['ws_frame_gap_p99_ms']:.1f} ms, "
        f"added per token {row['added_gap_per_token_ms']:+.2f} ms, {row['tokens_per_frame']:.1f} tokens/frame | "
        f"errors {row['errors_direct']}/{row['errors_ws']}",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--streams", type=int, default=100, help="streams per path per concurrency level")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--interval-ms", type=float, default=20)
    parser.add_argument("--ttft-ms", type=float, default=100)
    parser.add_argument("--think-ms", type=float, default=1000, help="max random pause before each message")
    parser.add_argument("--burst", action="store_true", help="no pauses: all streams start at the same instant")
    parser.add_argument("--no-moderation", action="store_true", help="turn the moderation call off (to isolate it)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--path", choices=["websocket", "api"], default="websocket", help="our side: the chat "
                        "websocket, or the OpenAI-compatible API (/v1/chat/completions, streamed)")  # fmt: skip
    args = parser.parse_args()
    print(
        f"dev LLM: {args.tokens} tokens, {args.interval_ms} ms apart, first after {args.ttft_ms} ms; "
        f"{'burst: all streams start together' if args.burst else f'think time 0-{args.think_ms:.0f} ms'}; "
        f"database {os.environ.get('BENCH_DATABASE_URL') or 'embedded'}, "
        f"redis {os.environ.get('REDIS_URL') or 'none (in-memory layer)'}; "
        f"moderation {'off' if args.no_moderation else 'on'}; our side: {args.path}",
        flush=True,
    )
    env = bench_environment()
    cookies, keys = prepare_database(env, max(args.concurrency))
    results = asyncio.run(run(args, env, cookies, keys))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

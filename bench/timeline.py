"""Where our added time to first token goes, stage by stage: one request at a time through the websocket or
the API, on a real daphne running bench/timeline_app.py (the real application, with time stamps), and the same
prompts straight to the dev LLM for the baseline.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/aisaas_bench REDIS_URL=redis://127.0.0.1:6379/14 \
        python bench/timeline.py [--path websocket|api] [--requests 40] [--no-moderation]

Prints the p50 of each stage, in milliseconds. Stamps from the client and the server compare directly:
`time.monotonic()` is one clock for every process on the machine. Results: docs/performance.md.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_environment  # noqa: E402
from bench.ttft import direct_stream, prepare_database, socket_stream  # noqa: E402
from tests.servers import start_daphne, start_devllm  # noqa: E402

# (label, from, to): the stages of one request, between the marks bench/timeline_app.py records.
STAGES = [
    ("our server receives the request or frame", "client_sent", "arrived"),
    ("to the gate on the event loop", "arrived", "gate_loop_start"),
    ("the gate on the event loop (wall; its steps below)", "gate_loop_start", "gate_loop_end"),
    ("moderation sent, after arrival", "arrived", "moderation_start"),
    ("moderation call (wall)", "moderation_start", "moderation_end"),
    ("the provider's first content, after the gate (its TTFT: 100 ms)", "gate_loop_end", "first_content"),
    ("first content handed to daphne", "first_content", "first_content_sent"),
    ("first content reaches the client", "first_content_sent", "client_first_content"),
]
STEPS = ["gate_loop", "gate_read", "limits", "reservation"]


async def measure(args, web, devllm, cookie: str, key: str) -> tuple[list[float], list[tuple[float, float]]]:
    import openai
    import websockets

    direct = openai.AsyncOpenAI(base_url=f"{devllm.url}/v1", api_key="bench-key", max_retries=0)
    if args.path == "api":
        ours_client = openai.AsyncOpenAI(base_url=f"{web.url}/v1", api_key=key, max_retries=0)

        async def ours(prompt):
            return await direct_stream(ours_client, "demo-mini", prompt)
    else:
        socket = await websockets.connect(
            f"ws://127.0.0.1:{web.port}/ws/chat/",
            origin=f"http://127.0.0.1:{web.port}",
            additional_headers={"Cookie": f"sessionid={cookie}"},
            max_size=None,
        )

        async def ours(prompt):
            return await socket_stream(socket, prompt)

    run = f"{time.time():.0f}"
    for number in range(5):  # warm up both paths; these requests are not counted
        await direct_stream(direct, "demo-mini", f"warm up {run} {number}")
        await ours(f"warm up {run} {number}")
    await asyncio.sleep(0.2)
    Path(os.environ["TIMELINE_LOG"]).write_text("")
    rng = random.Random(1)
    direct_ttft, ours_times = [], []
    for number in range(args.requests):
        # The bench's random pauses (the same on both paths); at least 50 ms, so each request's line is
        # written before the next request starts.
        await asyncio.sleep(rng.uniform(0.05, 1))
        started, arrivals, _ = await direct_stream(direct, "demo-mini", f"Question {run} {number}")
        direct_ttft.append(arrivals[0] - started)
        await asyncio.sleep(rng.uniform(0.05, 1))
        started, arrivals, _ = await ours(f"Question {run} {number}")
        ours_times.append((started, arrivals[0]))
    if args.path == "websocket":
        await socket.close()
    await asyncio.sleep(0.2)
    return direct_ttft, ours_times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=["websocket", "api"], default="websocket")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--no-moderation", action="store_true")
    args = parser.parse_args()
    env = bench_environment()
    cookies, keys = prepare_database(env, 1)
    log = Path(tempfile.mkdtemp()) / "timeline.jsonl"
    log.write_text("")
    os.environ["TIMELINE_LOG"] = str(log)
    devllm = start_devllm("--tokens", "32", "--interval-ms", "20", "--ttft-ms", "100")
    web = start_daphne(
        {
            **env,
            "LLM_BASE_URL": f"{devllm.url}/v1",
            "LLM_API_KEY": "bench-key",
            "MODERATION_ENABLED": "false" if args.no_moderation else "true",
            "TIMELINE_LOG": str(log),
        },
        application="bench.timeline_app:application",
    )
    try:
        direct_ttft, ours_times = asyncio.run(measure(args, web, devllm, cookies[0], keys[0]))
    finally:
        web.stop()
        devllm.stop()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    if len(rows) != len(ours_times):
        sys.exit(f"{len(rows)} server lines for {len(ours_times)} requests: were they one at a time?")
    for row, (sent, first) in zip(rows, ours_times, strict=True):
        row.update(client_sent=sent, client_first_content=first)
    ours_ttft = [first - sent for sent, first in ours_times]

    def p50(values) -> float:
        return statistics.median(values) if values else float("nan")

    print(
        f"{args.path}, {args.requests} requests one at a time, moderation {'off' if args.no_moderation else 'on'}: "
        f"TTFT p50 direct {p50(direct_ttft) * 1000:.2f} ms, ours {p50(ours_ttft) * 1000:.2f} ms "
        f"(added {(p50(ours_ttft) - p50(direct_ttft)) * 1000:+.2f} ms)"
    )
    for label, start, end in STAGES:
        spans = [(row[end] - row[start]) * 1000 for row in rows if start in row and end in row]
        if spans:
            print(f"  {label:<64} {p50(spans):8.2f} ms")
    collections = [row.get("gc_collections", 0) for row in rows]
    gc_ms = [row.get("gc_ms", 0.0) for row in rows]
    print(
        f"  {'garbage collections per request (p50 count, time)':<64} {p50(collections):8.0f}    "
        f"{p50(gc_ms):.2f} ms (max {max(gc_ms):.2f} ms)"
    )
    for step in STEPS:
        if any(f"{step}_ms" in row for row in rows):
            wall = p50([row[f"{step}_ms"] for row in rows if f"{step}_ms" in row])
            cpu = p50([row[f"{step}_cpu_ms"] for row in rows if f"{step}_cpu_ms" in row])
            print(f"  step {step:<59} {wall:8.2f} ms wall" + (f", {cpu:.2f} ms CPU" if cpu == cpu else ""))


if __name__ == "__main__":
    main()

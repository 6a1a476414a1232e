"""The usage gate's cost per message: gate + settle + usage record, against the same chat work without it.

    make bench-gate                           # on embedded PostgreSQL and Redis
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/aisaas_bench REDIS_URL=redis://127.0.0.1:6379/14 \
        python bench/gate.py                  # on servers of your own

In one run, alternating message by message on the same database (and Redis):

  baseline  the chat's own database work for one message without the gate: save the turn (conversation,
            question, empty reply), then save the answer as the settlement would (one UPDATE from the event
            loop's pool, as the settlement runs)
  gated     the same through the gate: the user's plan, rate limits (one Redis script), the spend cap, the
            quota reservation, the prompt-cache lookup; then the real settlement (chat.services.reply_settle:
            answer + usage record + quota + spend ledger in one transaction, the unused daily tokens given
            back, the answer stored in the prompt cache)

Added = gated - baseline, p50 and p99, in wall time, in CPU time of the event loop's thread (what of the
added time is our own work there) and in the rest of each message's time, the loop's waiting for the stores.
Redis commands are counted per gated message. Moderation, a call to the provider's moderations endpoint, is
timed on its own against the dev LLM (loopback), since its cost is the provider's latency. With production
settings the run also times this machine's floor: the cheapest round trip to each store from the event loop,
and one to both at once (the gate and the settlement each send one pair); the added cost is a few of these plus
the statements' own work, so the floor says how this machine compares with the one of another run. Results:
docs/performance.md.
"""

import argparse
import asyncio
import collections
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_environment, bench_plan, compared_ms, django_setup, percentile  # noqa: E402
from tests.servers import start_devllm  # noqa: E402


async def run(messages: int) -> dict:
    """Both paths as the server runs them, from an event loop: the gate and the settlement on the loop, the turn
    in a database thread."""
    import redis.asyncio
    from django.conf import settings

    from chat import services as chat
    from core.db import in_db_thread, loop_execute
    from llm.provider import clients_close
    from usage import services as usage
    from users.services import user_create_verified

    user = await in_db_thread(user_create_verified)(email="gate-bench@example.com", password="bench-password-123")
    # This run's own questions: the bench's Redis keeps the answers of earlier runs in the prompt cache, and the
    # gate's lookup should miss, as it does for most messages.
    run = uuid.uuid4().hex[:8]
    await in_db_thread(usage.plan_change)(user=user, plan=await in_db_thread(bench_plan)())
    settings.LLM_MODELS = ["demo-mini:0.15:0.60"]

    class ProviderStream:  # what the settlement reads of a finished provider stream
        model = "demo-mini"
        usage = {"prompt_tokens": 40, "completion_tokens": 32}

    async def baseline(number: int) -> None:
        prompt = chat.prompt_for(user, [{"role": "user", "content": f"Baseline question {number} ({run})"}])
        plan = chat.TurnPlan(user, None, f"Baseline question {number} ({run})", "demo-mini", prompt, "Baseline", None)
        turn = await in_db_thread(chat.turn_record)(plan=plan)
        answer = {
            "message_id": turn.message_id,
            "content": "An answer of about thirty-two tokens.",
            "status": "complete",
            "model": "demo-mini",
            "prompt_tokens": 40,
            "completion_tokens": 32,
            "error_code": "",
            "time_to_first_token_ms": 100,
            "duration_ms": 700,
        }
        await loop_execute(*chat.turn_finish_statement(**answer))

    async def gated(number: int) -> None:
        content = f"Gated question {number} ({run})"
        plan = await chat.turn_plan(user=user, conversation_id=None, content=content, model=None)
        turn = await in_db_thread(chat.turn_record)(plan=plan)
        outcome = chat.ReplyOutcome(turn.message_id, "complete", "demo-mini", 40, 32, "", "", None)
        await chat.reply_settle(
            plan=plan,
            stream=ProviderStream(),
            turn=turn,
            content="An answer of about thirty-two tokens.",
            outcome=outcome,
            time_to_first_token_ms=100,
            duration_ms=700,
        )

    for number in range(50):  # warm up: connections, scripts loaded, first queries
        await baseline(-number - 1)
        await gated(-number - 1)

    commands = collections.Counter()
    execute = redis.asyncio.Redis.execute_command

    async def counting_execute(self, *args, **options):
        commands[str(args[0]).upper()] += 1
        return await execute(self, *args, **options)

    # Wall time, and the CPU time of the event loop's thread (the database thread's is not in it, on either path).
    timings = {"baseline": [], "gated": []}
    cpu = {"baseline": [], "gated": []}
    for number in range(messages):
        started, started_cpu = time.perf_counter(), time.thread_time()
        await baseline(number)
        timings["baseline"].append(time.perf_counter() - started)
        cpu["baseline"].append(time.thread_time() - started_cpu)
        redis.asyncio.Redis.execute_command = counting_execute
        started, started_cpu = time.perf_counter(), time.thread_time()
        await gated(number)
        timings["gated"].append(time.perf_counter() - started)
        cpu["gated"].append(time.thread_time() - started_cpu)
        redis.asyncio.Redis.execute_command = execute
    await clients_close()
    # What of each message's time the loop's thread spent not working: waiting for the stores (and for the
    # database thread that saves the turn, on both paths).
    waits = {path: [wall - used for wall, used in zip(timings[path], cpu[path], strict=True)] for path in timings}

    return {
        "messages": messages,
        **compared_ms(("gated", timings["gated"]), ("baseline", timings["baseline"])),
        **compared_ms(("gated", cpu["gated"]), ("baseline", cpu["baseline"]), metric="loop_cpu"),
        **compared_ms(("gated", waits["gated"]), ("baseline", waits["baseline"]), metric="wait"),
        "redis_commands_per_message": {name: count / messages for name, count in sorted(commands.items())},
    }


async def timed(call, *, calls: int, warm_up: int) -> list[float]:
    """Seconds each of `calls` awaits of `call(number)` took, after `warm_up` untimed ones."""
    for number in range(warm_up):
        await call(-number - 1)
    timings = []
    for number in range(calls):
        started = time.perf_counter()
        await call(number)
        timings.append(time.perf_counter() - started)
    return timings


async def time_moderation(calls: int) -> tuple[float, float]:
    from llm.provider import clients_close, moderation_categories

    timings = await timed(
        lambda number: moderation_categories(f"Is this message fine? {number}"), calls=calls, warm_up=10
    )
    await clients_close()
    return percentile(timings, 50) * 1000, percentile(timings, 99) * 1000


async def time_round_trips(calls: int) -> dict[str, float]:
    """p50 (ms) of the cheapest round trip from the event loop to PostgreSQL (SELECT 1 on the loop's pool), to
    Redis (PING on redis-py's asyncio client) and to both at once."""
    import redis.asyncio
    from django.conf import settings

    from core.db import loop_fetchone, loop_pool_close

    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    trips = {
        "PostgreSQL": lambda _: loop_fetchone("SELECT 1", []),
        "Redis": lambda _: client.ping(),
        "both at once": lambda _: asyncio.gather(loop_fetchone("SELECT 1", []), client.ping()),
    }
    floor = {name: percentile(await timed(trip, calls=calls, warm_up=50), 50) * 1000 for name, trip in trips.items()}
    await client.aclose()
    await loop_pool_close()
    return floor


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    env = bench_environment()
    print(
        f"database {env['DATABASE_URL'].split('@')[-1]}, Redis {env['REDIS_URL'].split('@')[-1]}, "
        f"{args.messages} messages per path, alternating",
        flush=True,
    )
    devllm = start_devllm()
    try:
        django_setup({**env, "LLM_BASE_URL": f"{devllm.url}/v1", "LLM_API_KEY": "bench-key"})
        result = asyncio.run(run(args.messages))
        moderation_p50, moderation_p99 = asyncio.run(time_moderation(300))
        floor = asyncio.run(time_round_trips(2000))
    finally:
        devllm.stop()
    print(
        f"baseline p50 {result['baseline_p50_ms']:.2f} ms / p99 {result['baseline_p99_ms']:.2f} ms | "
        f"gated p50 {result['gated_p50_ms']:.2f} ms / p99 {result['gated_p99_ms']:.2f} ms | "
        f"added p50 {result['added_p50_ms']:+.2f} ms / p99 {result['added_p99_ms']:+.2f} ms"
    )
    print(
        f"event loop thread's CPU p50: baseline {result['baseline_loop_cpu_p50_ms']:.2f} ms, "
        f"gated {result['gated_loop_cpu_p50_ms']:.2f} ms, added {result['added_loop_cpu_p50_ms']:+.2f} ms"
    )
    print(
        f"waiting (wall - loop CPU) p50: baseline {result['baseline_wait_p50_ms']:.2f} ms, "
        f"gated {result['gated_wait_p50_ms']:.2f} ms, added {result['added_wait_p50_ms']:+.2f} ms"
    )
    print("Redis commands per gated message:", result["redis_commands_per_message"])
    print(f"moderation call (dev LLM, loopback): p50 {moderation_p50:.2f} ms / p99 {moderation_p99:.2f} ms")
    trips = ", ".join(f"{name} {ms:.2f} ms" for name, ms in floor.items())
    print(f"this machine's round trip from the event loop, p50: {trips}")


if __name__ == "__main__":
    main()

import asyncio
import threading

import pytest
from django.db import connection

from usage.models import Plan
from usage.services import plan_change


def make_plan(**overrides) -> Plan:
    fields = {
        "slug": "test",
        "name": "Test",
        "monthly_token_allowance": 1_000_000,
        "requests_per_minute": 1000,
        "requests_per_day": 10_000,
        "tokens_per_day": 10_000_000,
        "allowed_models": [],
        "max_tokens_per_request": 100,
        **overrides,
    }
    return Plan.objects.create(**fields)


@pytest.fixture
def put_on_plan():
    """Put a user on a fresh plan with the given limits: put_on_plan(user, requests_per_minute=2)."""

    def put(user, **overrides) -> Plan:
        plan = make_plan(**overrides)
        plan_change(user=user, plan=plan)
        return plan

    return put


def race(count: int, work) -> list:
    """Run `work()` in `count` threads released at the same instant, each with its own database connection;
    returns their results. An exception in any thread fails the test."""
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(work())
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def on_loop(function, /, *args, **kwargs):
    """An async service run from a sync test, on an event loop of its own, closing what it opened there (the
    gate's PostgreSQL pool and Redis client). The pool's connections see committed data only: tests that use
    this are transactional."""
    from core.db import loop_pool_close
    from usage.limits import store_close

    async def run():
        try:
            return await function(*args, **kwargs)
        finally:
            await loop_pool_close()
            await store_close()

    return asyncio.run(run())


async def deferred_settlements_drained(timeout: float = 15.0) -> None:
    """Wait until this loop has replayed every settlement it deferred (usage.services.deferred)."""
    from usage.services.deferred import settlements_deferred_count

    async with asyncio.timeout(timeout):
        while settlements_deferred_count():
            await asyncio.sleep(0.05)


ANSWER_PROMPT = [{"role": "user", "content": "How much?"}]


async def admitted(user, *, prompt=ANSWER_PROMPT, model="demo-mini", source="chat", cacheable=False):
    """Through the real gate (its read, then its admission), as a chat message or an API call goes."""
    from usage import services

    state = await services.gate_state(user=user)
    return await services.gate_admit(
        user=user, state=state, model=model, prompt=prompt, source=source, cacheable=cacheable
    )


async def settled(admission, *, prompt_tokens, completion_tokens, model="demo-mini", status="complete", **more):
    """The real settlement of an admission, as the API settles a call (no conversation)."""
    from usage import services

    return await services.usage_settle(
        admission=admission,
        conversation_id=None,
        message_id=None,
        model=model,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        **more,
    )


async def _answer(user, *, model, prompt_tokens, completion_tokens, cached):
    admission = await admitted(user, model=model)
    return await settled(
        admission, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached=cached
    )


def answer(user, *, model="demo-mini", prompt_tokens=10, completion_tokens=20, cached=False):
    """One answer through the real gate and settlement, as the chat or the API would account it (from a sync,
    transactional test)."""
    return on_loop(
        _answer, user, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached=cached
    )

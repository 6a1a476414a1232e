"""Exact-match prompt cache: the same user sending the same model the same messages with the same
parameters gets the stored answer back, without a provider call.

Scope: per user. The key includes the user's id as well as the whole message list (system prompt with the
user's context, and the conversation), so one user's private context can never be served to another, even
for an identical question. Regenerate never reads the cache (the user asked for a different answer).
Charging for hits is PROMPT_CACHE_HIT_CHARGE: "none" (default; a hit costs no quota, and no provider cost is
recorded) or "full" (charged as if generated). Either way the hit is one cached UsageRecord.

Whether a request uses the cache at all (PROMPT_CACHE_ENABLED, not for regenerate) is decided by the gate:
an admission carries a cache key or none. The cache is not correctness-critical: if the store fails, a
lookup is a miss and a write is skipped. When the cache and the rate limits share one Redis (the default:
both on REDIS_URL), the gate's lookup and the settlement's write ride along with the limits' own scripts
(`rides_with_limits`, usage.limits), so they cost no round trip of their own.
"""

import functools
import hashlib
import json
import logging

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.signals import setting_changed
from django.dispatch import receiver

from usage import limits

logger = logging.getLogger(__name__)


def key_for(*, user_id: int, model: str, messages: list[dict], max_tokens: int) -> str:
    material = json.dumps(
        {
            "user": user_id,
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": str(settings.LLM_TEMPERATURE),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return "prompt-cache:" + hashlib.sha256(material.encode()).hexdigest()


def answer_of(*, text: str, model: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"text": text, "model": model, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


def get(key: str) -> dict | None:
    try:
        return cache.get(key)
    except Exception:
        logger.warning("Prompt cache lookup failed; treating it as a miss", exc_info=True)
        return None


def put(key: str, answer: dict) -> None:
    try:
        cache.set(key, answer, timeout=settings.PROMPT_CACHE_TTL_SECONDS)
    except Exception:
        logger.warning("Prompt cache write failed", exc_info=True)


@functools.cache
def rides_with_limits() -> bool:
    """Remembered until CACHES changes (_caches_changed): the gate and the settlement ask on every paid call,
    and each `caches[...]` is an asgiref Local lookup, ~5 µs from async code."""
    return limits.store_shared_with(caches[DEFAULT_CACHE_ALIAS])  # the store itself, not the `cache` proxy


@receiver(setting_changed)
def _caches_changed(*, setting: str, **kwargs) -> None:
    if setting == "CACHES":
        rides_with_limits.cache_clear()


def store_key(key: str) -> str:
    """`key` as the store holds it (prefix and version), for a read riding along with the limits."""
    return cache.make_key(key)


def decoded(raw: bytes | None) -> dict | None:
    """A value read by the limits' script (take(read=...)) as get() would return it."""
    if raw is None:
        return None
    try:
        return cache.client.decode(raw)
    except Exception:
        logger.warning("Prompt cache entry unreadable; treating it as a miss", exc_info=True)
        return None


def raw_write(key: str, answer: dict) -> limits.RawWrite:
    """put(key, answer) as a write riding along with the limits' give-back."""
    store = caches[DEFAULT_CACHE_ALIAS]  # looked up once: each use of the `cache` proxy looks it up again
    return limits.RawWrite(store.make_key(key), store.client.encode(answer), settings.PROMPT_CACHE_TTL_SECONDS * 1000)

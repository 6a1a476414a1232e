"""Exact-match prompt cache: the same user sending the same model the same messages with the same
parameters gets the stored answer back, without a provider call.

Scope: per user. The key includes the user's id as well as the whole message list (system prompt with the
user's context, and the conversation), so one user's private context can never be served to another, even
for an identical question. Regenerate never reads the cache (the user asked for a different answer).
Charging for hits is PROMPT_CACHE_HIT_CHARGE: "none" (default; a hit costs no quota, and no provider cost is
recorded) or "full" (charged as if generated). Either way the hit is one cached UsageRecord.

Whether a request uses the cache at all (PROMPT_CACHE_ENABLED, not for regenerate) is decided by the gate:
an admission carries a cache key or none. The cache lives in the rate limits' Redis: the gate's lookup and the
settlement's write ride along with the limits' own scripts (usage.limits: take(read=), give_back(write=)), so
they cost no round trip of their own. It is not correctness-critical: an unreadable entry is a miss.
"""

import hashlib
import json
import logging

from django.conf import settings

from usage import limits

logger = logging.getLogger(__name__)


def key_for(*, user_id: int, model: str, messages: list[dict], max_tokens: int) -> str:
    """The store key (usage.limits.store_key) of this request's answer."""
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
    return limits.store_key("prompt-cache:" + hashlib.sha256(material.encode()).hexdigest())


def answer_of(*, text: str, model: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"text": text, "model": model, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


def decoded(raw: bytes | None) -> dict | None:
    """A value read by the limits' script (take(read=...)): the answer stored by write(), or None."""
    if raw is None:
        return None
    try:
        answer = json.loads(raw)
    except ValueError:
        logger.warning("Prompt cache entry unreadable; treating it as a miss")
        return None
    return answer if isinstance(answer, dict) else None


def write(key: str, answer: dict) -> limits.RawWrite:
    """Storing `answer` under `key`, as a write riding along with the limits' give-back."""
    value = json.dumps(answer, ensure_ascii=False).encode()
    return limits.RawWrite(key, value, settings.PROMPT_CACHE_TTL_SECONDS * 1000)

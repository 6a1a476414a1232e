"""What the dev LLM says and how it misbehaves. Pure functions: the same request always gives the same answer."""

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

FAULTS = ("none", "error_before", "error_mid", "hang", "hang_mid")
# What an answer says: the usual echo and filler, or the sampling parameters the request came with (SAMPLING, as
# JSON), for tests that check what a client of ours passed on.
ECHOES = ("text", "sampling")
SAMPLING = ("stop", "top_p", "presence_penalty", "frequency_penalty", "seed", "logit_bias")

# "[devllm tokens=5 interval_ms=0 fault=error_mid]" anywhere in the last user message overrides the server's
# defaults for that one request (and is left out of the echo).
DIRECTIVE = re.compile(r"\[devllm((?:\s+[a-z_]+=[\w.]+)*)\s*\]")

# Text containing this phrase is flagged by /v1/moderations; "flag-me:violence" picks the category.
MODERATION_TRIGGER = re.compile(r"flag-me(?::([a-z/-]+))?", re.IGNORECASE)
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

# The rest of an answer: these sentences in order, starting at a place chosen by the prompt's hash.
FILLER = (
    "This is the built-in demo model, so the answer is canned.",
    "Answers stream token by token over a websocket.",
    "Every request is gated before any paid call is made.",
    "Quotas are reserved atomically and settled to the real usage.",
    "Rate limits are shared by every web process.",
    "Each token is metered, priced and billed exactly once.",
)

TOKEN = re.compile(r"\s*\S+|\s+")


@dataclass(frozen=True)
class Behaviour:
    tokens: int = 40  # answer length in tokens (the echo of the prompt counts)
    interval_ms: float = 20.0  # time between tokens
    ttft_ms: float = 100.0  # time to first token
    fault: str = "none"  # one of FAULTS
    fault_after: int = 5  # tokens sent before a mid-stream fault
    echo: str = "text"  # one of ECHOES

    def overridden_by(self, text: str) -> "Behaviour":
        match = DIRECTIVE.search(text)
        if not match:
            return self
        changes = {}
        for pair in match.group(1).split():
            name, _, raw = pair.partition("=")
            if name in {field.name for field in dataclasses.fields(self)}:
                changes[name] = type(getattr(self, name))(raw)
        if changes.get("fault", self.fault) not in FAULTS:
            changes.pop("fault")
        if changes.get("echo", self.echo) not in ECHOES:
            changes.pop("echo")
        return dataclasses.replace(self, **changes)


def last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return content or ""
    return ""


def answer_tokens(messages: list[dict], *, length: int) -> list[str]:
    """The answer, split into tokens: an echo of the user's words, then deterministic filler."""
    prompt = DIRECTIVE.sub("", last_user_text(messages)).strip()
    echo = TOKEN.findall(f"You said: {prompt}\n\n") if prompt else []
    first_sentence = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") % len(FILLER)
    tokens = echo[:length]
    sentence = first_sentence
    while len(tokens) < length:
        tokens.extend(TOKEN.findall(FILLER[sentence % len(FILLER)] + " "))
        sentence += 1
    return tokens[:length]


def sampling_tokens(payload: dict) -> list[str]:
    """An answer that is the request's sampling parameters, as JSON (Behaviour.echo "sampling")."""
    return TOKEN.findall(json.dumps({name: payload[name] for name in SAMPLING if payload.get(name) is not None}))


def cut_at_stop(tokens: list[str], stop) -> tuple[list[str], bool]:
    """The tokens before the first of the `stop` sequences (a string or a list), which is left out, as OpenAI's
    `stop` does; and whether one was met."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    text = "".join(tokens)
    found = [text.find(each) for each in stops if isinstance(each, str) and each and each in text]
    if not found:
        return tokens, False
    cut, kept, length = min(found), [], 0
    for token in tokens:
        if length + len(token) > cut:
            if cut > length:
                kept.append(token[: cut - length])
            break
        kept.append(token)
        length += len(token)
    return kept, True


def prompt_token_count(messages: list[dict]) -> int:
    """Words plus a per-message overhead, like a real tokenizer's framing tokens."""
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages)


def moderation_result(text: str) -> dict:
    match = MODERATION_TRIGGER.search(text)
    flagged_category = None
    if match:
        flagged_category = match.group(1) if match.group(1) in MODERATION_CATEGORIES else "harassment"
    return {
        "flagged": flagged_category is not None,
        "categories": {c: c == flagged_category for c in MODERATION_CATEGORIES},
        "category_scores": {c: 0.99 if c == flagged_category else 0.0001 for c in MODERATION_CATEGORIES},
        "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
    }

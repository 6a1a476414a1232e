"""Local token counting, for when the provider reports no usage (a stream we stopped or that failed).

`bpe-openai` ships OpenAI's o200k_base vocabulary inside the package and is tiktoken-compatible; tiktoken
itself downloads its vocabulary at first use, which fails on offline machines. o200k_base is the encoding of
current OpenAI models; for other providers it is an estimate of the same order.
"""

from functools import cache

import bpe_openai

# OpenAI's chat framing: each message costs a few tokens beyond its text, and the reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


@cache
def _encoding():
    return bpe_openai.get_encoding("o200k_base")


def token_count(text: str) -> int:
    return len(_encoding().encode_ordinary(text)) if text else 0


def prompt_token_count(messages: list[dict]) -> int:
    return TOKENS_PER_REPLY + sum(TOKENS_PER_MESSAGE + token_count(m.get("content") or "") for m in messages)


def prompt_tokens_upper_bound(messages: list[dict]) -> int:
    """A bound no provider's count can pass, for reserving quota before the call (I1): a byte-level BPE
    tokenizer (every OpenAI encoding, and most others) never makes more tokens than the text has UTF-8 bytes,
    and 4 tokens a message covers the chat framing. Counting with o200k_base instead would be closer but is
    exact only for one family of models; the difference is given back at settlement anyway."""
    return TOKENS_PER_REPLY + sum(4 + len((m.get("content") or "").encode()) for m in messages)

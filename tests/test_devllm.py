"""The dev LLM spoken to by the real `openai` SDK over real HTTP."""

import json

import httpx2
import openai
import pytest

from llm.devllm.behaviour import answer_tokens
from tests.servers import start_devllm

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


def client(server, **kwargs) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0, **kwargs)


async def test_stream_is_deterministic_and_ends_with_usage(devllm):
    stream = await client(devllm).chat.completions.create(
        model="demo-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert text == "".join(answer_tokens(MESSAGES, length=12))
    assert text.startswith("You said: Hello there")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"


async def test_stream_without_include_usage_has_no_usage_chunk(devllm):
    stream = await client(devllm).chat.completions.create(model="demo-mini", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and c.choices for c in chunks)


async def test_non_streaming_completion_and_max_tokens(devllm):
    completion = await client(devllm).chat.completions.create(model="demo-large", messages=MESSAGES, max_tokens=5)
    assert completion.choices[0].message.content == "".join(answer_tokens(MESSAGES, length=5))
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert completion.model == "demo-large"


async def test_a_stop_sequence_ends_the_answer_before_it(devllm):
    full = "".join(answer_tokens(MESSAGES, length=12))  # "You said: Hello there\n\n<filler>"
    first_filler_word = full.split("\n\n")[1].split()[0]

    stopped = await client(devllm).chat.completions.create(model="demo-mini", messages=MESSAGES, stop="\n\n")
    either = await client(devllm).chat.completions.create(
        model="demo-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
        stop=[first_filler_word, "there"],
    )  # fmt: skip
    chunks = [chunk async for chunk in either]

    assert stopped.choices[0].message.content == "You said: Hello there"
    assert stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens == 4
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: Hello "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 4  # "You", " said:", " Hello", and the part of " there" before it


async def test_echo_sampling_answers_with_the_sampling_parameters_received(devllm):
    sent = {"stop": ["\n\n"], "top_p": 0.5, "seed": 7, "logit_bias": {"50256": -100}}
    asked = [{"role": "user", "content": "What did you get? [devllm echo=sampling]"}]

    answer = await client(devllm).chat.completions.create(model="demo-mini", messages=asked, **sent)
    plain = await client(devllm).chat.completions.create(model="demo-mini", messages=asked)

    assert json.loads(answer.choices[0].message.content) == sent
    assert json.loads(plain.choices[0].message.content) == {}


async def test_models_and_moderations(devllm):
    models = await client(devllm).models.list()
    assert [m.id for m in models.data] == ["demo-mini", "demo-large"]

    result = await client(devllm).moderations.create(input=["fine text", "please flag-me:violence now"])
    assert [r.flagged for r in result.results] == [False, True]
    assert result.results[1].categories.violence is True
    assert result.results[1].categories.harassment is False


async def test_missing_key_is_401_in_openai_error_shape(devllm):
    response = httpx2.get(f"{devllm.url}/v1/models")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_fault_before_first_token_is_a_server_error(devllm):
    messages = [{"role": "user", "content": "hi [devllm fault=error_before]"}]
    with pytest.raises(openai.InternalServerError):
        await client(devllm).chat.completions.create(model="demo-mini", messages=messages, stream=True)


async def test_fault_mid_stream_raises_after_some_tokens(devllm):
    messages = [{"role": "user", "content": "hi [devllm fault=error_mid fault_after=3]"}]
    stream = await client(devllm).chat.completions.create(model="demo-mini", messages=messages, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="fault=error_mid"):
        async for chunk in stream:
            received.extend(c.delta.content for c in chunk.choices if c.delta.content)
    assert len(received) == 3
    assert "".join(received) == "".join(answer_tokens(messages, length=3))


async def test_hang_times_out(devllm):
    messages = [{"role": "user", "content": "hi [devllm fault=hang]"}]
    with pytest.raises(openai.APITimeoutError):
        await client(devllm, timeout=0.5).chat.completions.create(model="demo-mini", messages=messages, stream=True)


async def test_server_wide_faults_and_timing_flags():
    server = start_devllm("--fault", "error_before")
    try:
        with pytest.raises(openai.InternalServerError):
            await client(server).chat.completions.create(model="demo-mini", messages=MESSAGES)
    finally:
        server.stop()

"""The OpenAI-compatible API with the official `openai` SDK against a live server of ours (daphne in a
subprocess, on the test database, talking to the dev LLM): answers, usage, and each error as the SDK's own
exception class."""

import json
import threading

import openai
import pytest
from django.utils import timezone

from tests.factories import UserFactory
from tests.servers import database_url, start_daphne
from tests.usage.conftest import make_plan
from usage import services
from usage.models import QuotaPeriod, UsageRecord
from users import services as user_services

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = [{"role": "user", "content": "Hello API"}]


def _api_daphne(devllm):
    from django.db import connection

    return start_daphne(
        {
            "DEBUG": "true",
            "DATABASE_URL": database_url(connection.settings_dict),
            "LLM_BASE_URL": f"{devllm.url}/v1",
            "LLM_API_KEY": "api-test-key",
            "LLM_MODELS": "demo-mini:0.15:0.60,demo-large:2.50:10.00",
        }
    )


@pytest.fixture(scope="module")
def api_server(django_db_setup, devllm):
    server = _api_daphne(devllm)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def second_api_server(django_db_setup, devllm):
    """Another web process on the same database (and Redis, in CI): the quota is shared between them."""
    server = _api_daphne(devllm)
    yield server
    server.stop()


@pytest.fixture
def api_user():
    return UserFactory()


@pytest.fixture
def raw_key(api_user):
    return user_services.api_key_create(user=api_user, name="tests")[1]


def sdk(api_server, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api_server.url}/v1", api_key=key, max_retries=0, timeout=20)


def test_a_non_streaming_answer_with_usage_is_recorded_against_the_key(api_server, api_user, raw_key):
    answer = sdk(api_server, raw_key).chat.completions.create(model="demo-mini", messages=PROMPT)

    assert answer.object == "chat.completion" and answer.model == "demo-mini"
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    record = UsageRecord.objects.get(user=api_user)
    assert (record.source, record.api_key.name, record.status) == ("api", "tests", "complete")
    assert (record.prompt_tokens, record.completion_tokens) == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )
    period = QuotaPeriod.objects.containing(timezone.now()).get(user=api_user)
    assert (period.used, period.reserved) == (record.billable_tokens, 0)


def test_a_streamed_answer_arrives_in_chunks_with_usage_last(api_server, api_user, raw_key):
    stream = sdk(api_server, raw_key).chat.completions.create(
        model="demo-mini", messages=[{"role": "user", "content": "Stream please"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("You said: Stream please")
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert UsageRecord.objects.get(user=api_user).completion_tokens == chunks[-1].usage.completion_tokens


def test_without_include_usage_the_stream_has_no_usage_chunk(api_server, raw_key):
    chunks = list(sdk(api_server, raw_key).chat.completions.create(model="demo-mini", messages=PROMPT, stream=True))

    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


def test_models_lists_what_the_owners_plan_allows(api_server, api_user, raw_key):
    client = sdk(api_server, raw_key)
    assert sorted(m.id for m in client.models.list()) == ["demo-large", "demo-mini"]

    services.plan_change(user=api_user, plan=make_plan(slug="mini-only", allowed_models=["demo-mini"]))
    assert [m.id for m in client.models.list()] == ["demo-mini"]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="demo-large", messages=PROMPT)
    assert refused.value.body["code"] == "model_not_in_plan"


def test_a_model_is_retrieved_as_listed_and_others_are_not_found(api_server, api_user, raw_key):
    client = sdk(api_server, raw_key)
    model = client.models.retrieve("demo-large")
    assert (model.id, model.object) == ("demo-large", "model")

    services.plan_change(user=api_user, plan=make_plan(slug="mini-only", allowed_models=["demo-mini"]))
    for absent in ("demo-large", "gpt-99"):
        with pytest.raises(openai.NotFoundError) as missing:
            client.models.retrieve(absent)
        assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
    with pytest.raises(openai.AuthenticationError):
        sdk(api_server, "sk-ais-not-a-real-key").models.retrieve("demo-mini")


def test_a_url_we_do_not_serve_under_v1_is_an_openai_shaped_404(api_server, raw_key):
    client = sdk(api_server, raw_key)
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="demo-mini", input="Hello")
    assert missing.value.body["code"] == "unknown_url" and "POST /v1/embeddings" in missing.value.body["message"]

    status, body = _request(f"{api_server.url}/v1/chat/completions/extra", None, {})
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    assert not UsageRecord.objects.exists()


def test_each_answer_carries_its_usage_records_request_id(api_server, api_user, raw_key):
    client = sdk(api_server, raw_key)
    answer = client.chat.completions.create(model="demo-mini", messages=[{"role": "user", "content": "Which id?"}])
    with client.chat.completions.with_streaming_response.create(
        model="demo-mini", messages=[{"role": "user", "content": "And this one?"}], stream=True
    ) as streamed:
        streamed_id = streamed.headers["x-request-id"]
        list(streamed.iter_lines())

    ids = set(UsageRecord.objects.filter(user=api_user).values_list("request_id", flat=True))
    assert ids == {answer._request_id, streamed_id} and len(ids) == 2


def test_bad_missing_and_revoked_keys_are_authentication_errors(api_server, api_user, raw_key):
    for key in ("sk-ais-not-a-real-key", "nonsense"):
        with pytest.raises(openai.AuthenticationError):
            sdk(api_server, key).chat.completions.create(model="demo-mini", messages=PROMPT)
    key = api_user.api_keys.get()
    user_services.api_key_revoke(user=api_user, key_id=key.pk)
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(api_server, raw_key).models.list()
    assert refused.value.body["type"] == "authentication_error"
    assert not UsageRecord.objects.exists()


def test_an_unknown_model_is_not_found_and_bad_requests_are_bad_requests(api_server, raw_key):
    client = sdk(api_server, raw_key)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-99", messages=PROMPT)
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"

    refused = [
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": PROMPT, "n": 3},
        {"messages": PROMPT, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"messages": PROMPT, "temperature": 7},
        {"messages": PROMPT, "max_tokens": 0},
    ]
    for arguments in refused:
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="demo-mini", **arguments)
        assert bad.value.body["type"] == "invalid_request_error" and bad.value.body["message"]
    # Fields the OpenAI API accepts and we have no use for are ignored.
    answer = client.chat.completions.create(model="demo-mini", messages=PROMPT, user="end-user-7", store=False)
    assert answer.choices[0].message.content
    assert UsageRecord.objects.count() == 1


ECHO_SAMPLING = [{"role": "user", "content": "What did the provider get? [devllm echo=sampling]"}]


def test_sampling_parameters_reach_the_provider_as_sent_and_defaults_are_left_out(api_server, raw_key):
    client = sdk(api_server, raw_key)
    sampling = {
        "stop": ["\n\n"],
        "top_p": 0.5,
        "presence_penalty": 0.4,
        "frequency_penalty": -0.3,
        "seed": 42,
        "logit_bias": {"50256": -100},
    }

    answer = client.chat.completions.create(model="demo-mini", messages=ECHO_SAMPLING, **sampling)
    at_defaults = client.chat.completions.create(
        model="demo-mini", messages=ECHO_SAMPLING, top_p=1, presence_penalty=0, frequency_penalty=0, stop=[]
    )

    assert json.loads(answer.choices[0].message.content) == sampling
    assert json.loads(at_defaults.choices[0].message.content) == {}


def test_a_stop_sequence_ends_the_answer_never_from_the_cache_and_only_what_was_produced_is_charged(
    api_server, api_user, raw_key
):
    client = sdk(api_server, raw_key)
    asked = [{"role": "user", "content": "Stop me here"}]
    full = client.chat.completions.create(model="demo-mini", messages=asked)  # and now in the prompt cache

    stream = client.chat.completions.create(
        model="demo-mini", messages=asked, stop="\n\n", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert full.choices[0].message.content.startswith("You said: Stop me here\n\n")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: Stop me here"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens < full.usage.completion_tokens
    stopped = UsageRecord.objects.filter(user=api_user).latest("created_at")
    assert not stopped.cached and stopped.completion_tokens == chunks[-1].usage.completion_tokens


@pytest.mark.parametrize(
    "wrong",
    [
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": [""]},
        {"stop": 5},
        {"top_p": 1.5},
        {"presence_penalty": -3},
        {"frequency_penalty": "high"},
        {"seed": 1.5},
        {"seed": True},
        {"logit_bias": {"the": 5}},
        {"logit_bias": {"50256": 101}},
    ],
)
def test_sampling_parameters_out_of_range_are_bad_requests_naming_them(api_server, raw_key, wrong):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk(api_server, raw_key).chat.completions.create(model="demo-mini", messages=PROMPT, **wrong)
    assert bad.value.body["param"] == next(iter(wrong)) and bad.value.body["code"] == "invalid_request"
    assert not UsageRecord.objects.exists()


def test_flagged_text_and_a_suspended_account_are_permission_errors(api_server, api_user, raw_key):
    client = sdk(api_server, raw_key)
    with pytest.raises(openai.PermissionDeniedError) as flagged:
        client.chat.completions.create(model="demo-mini", messages=[{"role": "user", "content": "flag-me:violence"}])
    assert flagged.value.body["code"] == "moderation_flagged" and flagged.value.body["categories"] == ["violence"]

    services.account_suspend(actor=UserFactory(is_staff=True), user=api_user, reason="Abuse")
    with pytest.raises(openai.PermissionDeniedError) as suspended:
        client.chat.completions.create(model="demo-mini", messages=PROMPT)
    assert suspended.value.body["code"] == "account_suspended"
    assert not UsageRecord.objects.exists()
    assert QuotaPeriod.objects.get(user=api_user).reserved == 0  # the flagged request gave its hold back


def test_each_answer_says_how_many_requests_are_left_this_minute_so_a_client_can_pace_itself(
    api_server, api_user, raw_key
):
    services.plan_change(user=api_user, plan=make_plan(slug="paced", requests_per_minute=5))
    client = sdk(api_server, raw_key)
    started = timezone.now().timestamp()
    answer = client.chat.completions.with_raw_response.create(model="demo-mini", messages=PROMPT)
    with client.chat.completions.with_streaming_response.create(
        model="demo-mini", messages=PROMPT, stream=True
    ) as streamed:
        list(streamed.iter_lines())

    assert [response.headers["X-RateLimit-Limit"] for response in (answer, streamed)] == ["5", "5"]
    assert [response.headers["X-RateLimit-Remaining"] for response in (answer, streamed)] == ["4", "3"]
    # One request of five a minute comes back every 12 s: two taken, the minute is whole again 24 s on.
    resets = [int(response.headers["X-RateLimit-Reset"]) for response in (answer, streamed)]
    assert started + 11 <= resets[0] <= started + 14 and started + 23 <= resets[1] <= started + 26


def test_x_ratelimit_reset_means_the_same_on_an_answer_and_on_the_429_after_it(api_server, api_user, raw_key):
    """When all of the minute's allowance is back, on every answer and refusal alike; Retry-After says when the
    next request would pass."""
    services.plan_change(user=api_user, plan=make_plan(slug="pair", requests_per_minute=2))
    client = sdk(api_server, raw_key)
    client.chat.completions.create(model="demo-mini", messages=PROMPT)
    answer = client.chat.completions.with_raw_response.create(model="demo-mini", messages=PROMPT)

    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="demo-mini", messages=PROMPT)

    now = timezone.now().timestamp()
    answered_reset, refused = int(answer.headers["X-RateLimit-Reset"]), limited.value.response.headers
    assert int(refused["X-RateLimit-Reset"]) >= answered_reset  # never earlier than the answer just before it
    assert 55 <= int(refused["X-RateLimit-Reset"]) - now <= 61  # both requests back a minute on
    assert 25 <= int(refused["Retry-After"]) <= 31  # one comes back every 30 s


def test_a_rate_limit_is_a_rate_limit_error_with_retry_after_and_limit_headers(api_server, api_user, raw_key):
    services.plan_change(user=api_user, plan=make_plan(slug="slow", requests_per_minute=1))
    client = sdk(api_server, raw_key)
    client.chat.completions.create(model="demo-mini", messages=PROMPT)

    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="demo-mini", messages=PROMPT)

    headers = limited.value.response.headers
    assert int(headers["Retry-After"]) > 0 and headers["X-RateLimit-Limit"] == "1"
    assert headers["X-RateLimit-Remaining"] == "0" and int(headers["X-RateLimit-Reset"]) > 0
    assert limited.value.body["code"] == "rate_limited" and limited.value.body["type"] == "rate_limit_error"


def test_a_quota_race_over_the_api_across_two_web_processes_never_overshoots(
    api_server, second_api_server, api_user, raw_key
):
    worst_case = 200  # max_tokens 100 + the prompt's byte bound, well over 100
    plan = make_plan(slug="tight", monthly_token_allowance=5 * worst_case, max_tokens_per_request=100)
    services.plan_change(user=api_user, plan=plan)
    outcomes, barrier = [], threading.Barrier(12)

    def call(server):
        barrier.wait()
        try:
            # Slow answers (a dev LLM directive), so all twelve are in flight together.
            slow = [{"role": "user", "content": "Race [devllm tokens=40 interval_ms=10]"}]
            sdk(server, raw_key).chat.completions.create(model="demo-mini", messages=slow, max_tokens=100)
            outcomes.append("answered")
        except openai.RateLimitError as error:
            outcomes.append(error.body["code"])

    servers = [api_server, second_api_server] * 6
    threads = [threading.Thread(target=call, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    period = QuotaPeriod.objects.get(user=api_user)
    assert "quota_exceeded" in outcomes and outcomes.count("answered") >= 1
    assert period.used <= period.allowance and period.reserved == 0  # overshoot 0
    assert UsageRecord.objects.filter(user=api_user).count() == outcomes.count("answered")


def test_a_suspension_a_plan_change_and_the_kill_switch_apply_to_the_next_call_in_every_web_process(
    api_server, second_api_server, api_user, raw_key
):
    """Nothing about a caller is remembered between calls: each change made by staff (or billing) is seen by the
    next call in both processes, each of which has just admitted the caller."""
    from usage.models import SpendControl

    staff = UserFactory(is_staff=True)
    servers = (api_server, second_api_server)

    def answers(server) -> str:
        try:
            sdk(server, raw_key).chat.completions.create(model="demo-large", messages=PROMPT, max_tokens=5)
            return "answered"
        except openai.APIStatusError as error:
            return error.body["code"]

    services.plan_change(user=api_user, plan=make_plan(slug="large", allowed_models=["demo-large"]))
    assert [answers(server) for server in servers] == ["answered", "answered"]

    services.account_suspend(actor=staff, user=api_user, reason="Abuse report")
    assert [answers(server) for server in servers] == ["account_suspended", "account_suspended"]
    services.account_reactivate(actor=staff, user=api_user, reason="Resolved")
    assert [answers(server) for server in servers] == ["answered", "answered"]

    services.plan_change(user=api_user, plan=make_plan(slug="mini", allowed_models=["demo-mini"]))
    assert [answers(server) for server in servers] == ["model_not_in_plan", "model_not_in_plan"]
    services.plan_change(user=api_user, plan=make_plan(slug="both"))
    assert [answers(server) for server in servers] == ["answered", "answered"]

    SpendControl.objects.create(kill_switch=True)
    assert [answers(server) for server in servers] == ["paused", "paused"]


def test_malformed_json_and_the_wrong_method_get_openai_shaped_errors(api_server, raw_key):
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}

    bad = _request(f"{api_server.url}/v1/chat/completions", b"{not json", headers)
    wrong = _request(f"{api_server.url}/v1/chat/completions", None, headers)

    assert bad[0] == 400 and bad[1]["error"]["code"] == "invalid_json"
    assert wrong[0] == 405 and wrong[1]["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "demo-mini", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),  # nesting
        (b'{"model": "demo-mini", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}', "temperature"),
        (
            b'{"model": "demo-mini", "temperature": Infinity, "messages": [{"role": "user", "content": "hi"}]}',
            "temperature",
        ),
        (b'{"model": "demo-mini", "messages": [{"role": "user", "content": "a lone \\ud800 surrogate"}]}', "messages"),
        (b'{"model": "demo-mini", "messages": [{"role": "user", "content": "a NUL \\u0000 here"}]}', "messages"),
    ],
    ids=["nesting", "nan", "infinity", "lone surrogate", "nul"],
)
def test_hostile_bodies_get_a_400_and_cost_nothing(api_server, api_user, raw_key, body, param):
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}

    status, answer = _request(f"{api_server.url}/v1/chat/completions", body, headers)

    assert status == 400 and answer["error"]["type"] == "invalid_request_error", answer
    assert param is None or answer["error"]["param"] == param
    assert not UsageRecord.objects.exists() and not QuotaPeriod.objects.filter(reserved__gt=0).exists()


def _request(url: str, body: bytes | None, headers: dict) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own test server)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_a_guessed_key_costs_no_moderation_call_and_a_known_one_is_moderated_after_the_gate(
    moderation_requests,
):
    """The API's gate checks the key in the same query as the quota: a wrong key is refused before any
    moderation request, a known key has each message moderated once the gate admitted it."""
    from chat import completions
    from core.db import in_db_thread

    user = await in_db_thread(UserFactory)()
    raw = (await in_db_thread(user_services.api_key_create)(user=user, name="tests"))[1]
    request = completions.completion_request_parse({"model": "demo-mini", "messages": PROMPT, "stream": True})

    for guess in (raw[:-1] + "x", "", "not-a-key"):
        with pytest.raises(completions.AuthenticationFailed):
            await completions.completion_open(token=guess, request=request)
    assert moderation_requests == []

    for _ in range(2):
        completion = await completions.completion_open(token=raw, request=request)
        assert "".join([event async for event in completion.events()]).endswith("data: [DONE]\n\n")
    assert moderation_requests == [("Hello API", 1), ("Hello API", 2)]


def test_a_client_that_goes_away_mid_stream_stops_the_answer_and_is_charged_for_what_was_produced(
    api_server, api_user, raw_key
):
    import http.client
    import json
    import time

    connection = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=10)
    body = {
        "model": "demo-mini",
        "messages": [{"role": "user", "content": "Long [devllm tokens=400 interval_ms=10]"}],
        "stream": True,
        "max_tokens": 1000,
    }
    connection.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(body),
        {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    response.read(400)  # a few events
    connection.sock.close()  # the developer's program is killed mid-answer
    connection.close()

    deadline = time.monotonic() + 10
    while not (records := list(UsageRecord.objects.filter(user=api_user))) and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = records
    assert record.status == "stopped" and record.source == "api"
    assert 0 < record.completion_tokens < 400  # what the provider had produced, not zero, not the whole answer
    assert QuotaPeriod.objects.get(user=api_user).reserved == 0


def test_a_client_that_goes_away_before_a_whole_answer_stops_it_and_is_charged_for_what_was_produced(
    api_server, api_user, raw_key
):
    """Not streamed: the client waits for the whole answer and gives up first."""
    import http.client
    import json
    import time

    connection = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=10)
    body = {"model": "demo-mini", "messages": [{"role": "user", "content": "Long [devllm tokens=400 interval_ms=10]"}],
            "max_tokens": 1000}  # fmt: skip
    connection.request("POST", "/v1/chat/completions", json.dumps(body),
                       {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"})  # fmt: skip
    time.sleep(1.0)  # about 100 of the 400 tokens produced
    connection.sock.close()
    connection.close()

    deadline = time.monotonic() + 10
    while not (records := list(UsageRecord.objects.filter(user=api_user))) and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = records
    assert record.status == "stopped"
    assert 0 < record.completion_tokens < 300  # what the provider had sent when it was stopped, not the whole
    assert QuotaPeriod.objects.get(user=api_user).reserved == 0


def test_a_provider_failing_before_any_text_is_a_502_that_charges_nothing(api_server, api_user, raw_key):
    with pytest.raises(openai.APIStatusError) as failed:
        sdk(api_server, raw_key).chat.completions.create(
            model="demo-mini", messages=[{"role": "user", "content": "Fail [devllm fault=error_before]"}]
        )

    assert failed.value.status_code == 502 and failed.value.body["code"] == "provider_error"
    assert failed.value.body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    (record,) = UsageRecord.objects.filter(user=api_user)
    assert (record.status, record.billable_tokens) == ("error", 0)
    assert QuotaPeriod.objects.get(user=api_user).used == 0


def test_a_foreign_host_and_an_oversize_body_are_refused_in_openai_shape(api_server, raw_key, settings):
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}
    foreign = _request(f"{api_server.url}/v1/models", None, {**headers, "Host": "evil.example"})
    huge = _request(f"{api_server.url}/v1/chat/completions", b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1), headers)

    assert foreign[0] == 400 and foreign[1]["error"]["code"] == "invalid_host"
    assert huge[0] == 413 and huge[1]["error"]["code"] == "request_too_large"


async def test_a_failure_after_the_stream_began_ends_the_body_instead_of_a_second_response(monkeypatch, caplog):
    """Once the 200 and the first events are out, an unexpected error can only cut the stream short (logged);
    a second response start would break the connection for the client."""
    import json

    from channels.testing import HttpCommunicator

    from chat import api, completions
    from core.db import in_db_thread

    async def breaking_events(self):
        yield 'data: {"choices": []}\n\n'
        raise RuntimeError("a bug")

    monkeypatch.setattr(completions.OpenCompletion, "events", breaking_events)
    user = await in_db_thread(UserFactory)()
    raw = (await in_db_thread(user_services.api_key_create)(user=user, name="tests"))[1]
    communicator = HttpCommunicator(
        api.application,
        "POST",
        "/v1/chat/completions",
        body=json.dumps({"model": "demo-mini", "messages": PROMPT, "stream": True}).encode(),
        headers=[(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {raw}".encode())],
    )

    response = await communicator.get_response(timeout=10)

    assert response["status"] == 200 and response["body"] == b'data: {"choices": []}\n\n'
    assert "API call failed" in caplog.text

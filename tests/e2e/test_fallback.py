"""Issue 4: provider fallback inside Envoy (priority groups + retry policy), translated per try."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest
from anthropic.types import MessageCreateParams
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY
from openai.types.chat import CompletionCreateParams
from pydantic import TypeAdapter

pytestmark = pytest.mark.e2e
STACK_EXTRA = {
    "models": {
        # These two exercise Envoy's retries on every try: the gateway breaker is kept out of the way.
        "fb-oai-first": {
            "routes": [{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "anthropic", "model": "claude-3-5-haiku"}],
            "per_try_timeout_s": 1.0, "breaker": {"failures": 1000, "honour_retry_after": False},
        },
        "fb-ant-first": {
            "routes": [{"provider": "anthropic", "model": "claude-3-5-haiku"}, {"provider": "openai", "model": "gpt-4o-mini"}],
            "per_try_timeout_s": 1.0, "breaker": {"failures": 1000, "honour_retry_after": False},
        },
        "fb-eject": {
            "routes": [{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "anthropic", "model": "claude-3-5-haiku"}],
            "breaker": {"failures": 2, "ejection_s": 1.0},
        },
        "weighted": {
            "routes": [{"provider": "openai", "priority": 0, "weight": 3}, {"provider": "anthropic", "priority": 0, "weight": 1}],
        },
        "pooled": {"routes": [{"provider": "pooled-anthropic", "model": "claude-3-5-haiku"}]},
    },
    "providers": {
        "pooled-anthropic": {"api": "anthropic", "base_url": "FAKE_ANTHROPIC",
                             "api_key_envs": [{"env": "E2E_POOL_1"}, {"env": "E2E_POOL_2"}]},
    },
    "env": {"E2E_POOL_1": "pool-key-1", "E2E_POOL_2": "pool-key-2"},
}
MSG = [{"role": "user", "content": "Say hello"}]


def oai(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0, timeout=20)


def ant(stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0, timeout=20)


PRIMARY_FAILURES = [
    pytest.param({"status": 429, "error": "Rate limit reached", "retry_after": 7}, id="429"),
    pytest.param({"status": 500, "error": "boom"}, id="500"),
    pytest.param({"status": 503, "error": "overloaded"}, id="503"),
    pytest.param({"hang": True, "hang_max_s": 5}, id="hang-past-per-try-timeout"),
    pytest.param({"reset": True}, id="connection-reset"),
]


@pytest.mark.parametrize("failure", PRIMARY_FAILURES)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_primary_fails_anthropic_fallback_answers(stack, fake_openai, fake_anthropic, failure, stream):
    fake_openai.script([failure])
    raw = oai(stack).chat.completions.with_raw_response.create(model="fb-oai-first", messages=MSG, stream=stream)
    assert raw.status_code == 200
    assert raw.headers["x-sidegate-provider"] == "anthropic" and raw.headers["x-sidegate-attempts"] == "2"
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content
    assert "hello" in text.lower()
    assert len(fake_openai.requests) == 1 and len(fake_anthropic.requests) == 1
    rec = fake_anthropic.requests[0]
    assert rec.path == "/v1/messages" and rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    assert "authorization" not in rec.headers  # the first try's header did not leak into the second
    TypeAdapter(MessageCreateParams).validate_python(rec.json)
    assert rec.json["model"] == "claude-3-5-haiku"


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_primary_fails_openai_fallback_answers(stack, fake_openai, fake_anthropic, stream):
    fake_anthropic.script([{"status": 529, "error": "Overloaded"}])
    c = ant(stack)
    if stream:
        with c.messages.stream(model="fb-ant-first", max_tokens=50, messages=MSG) as s:
            m = s.get_final_message()
    else:
        m = c.messages.create(model="fb-ant-first", max_tokens=50, messages=MSG)
    assert "hello" in m.content[0].text.lower()
    rec = fake_openai.requests[0]
    assert rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}" and "x-api-key" not in rec.headers
    assert "anthropic-version" not in rec.headers
    TypeAdapter(CompletionCreateParams).validate_python(rec.json)


def test_all_providers_fail_one_clean_error_in_client_format(stack, fake_openai, fake_anthropic):
    fake_openai.script([{"status": 500, "error": "primary down"}])
    fake_anthropic.script([{"status": 429, "error": "Number of requests has exceeded your rate limit", "retry_after": 3}])
    with pytest.raises(openai.RateLimitError) as exc:
        oai(stack).chat.completions.create(model="fb-oai-first", messages=MSG)
    assert exc.value.status_code == 429
    assert exc.value.response.headers.get("retry-after") == "3"
    assert exc.value.body["type"] == "rate_limit_error" and "rate limit" in exc.value.body["message"]
    fake_openai.script([{"status": 500}])
    fake_anthropic.script([{"status": 529, "error": "Overloaded"}])
    with pytest.raises(openai.InternalServerError) as exc2:
        oai(stack).chat.completions.create(model="fb-oai-first", messages=MSG)
    assert exc2.value.status_code == 503  # Anthropic 529 -> 503 for OpenAI clients


def test_all_fail_anthropic_client_gets_anthropic_error(stack, fake_openai, fake_anthropic):
    fake_anthropic.script([{"status": 500, "error": "a"}])
    fake_openai.script([{"status": 503, "error": "b"}])
    with pytest.raises(anthropic.InternalServerError) as exc:
        ant(stack).messages.create(model="fb-ant-first", max_tokens=50, messages=MSG)
    assert exc.value.body["type"] == "error"


def test_mid_stream_failure_ends_with_terminal_error_event(stack, fake_openai):
    """The provider dies after the first bytes: no retry is possible; the client gets a well-formed
    terminal error event in its format and the stream ends (no hang)."""
    fake_openai.script([{"truncate": 2, "chunks": 6}])
    start = time.monotonic()
    stream = oai(stack).chat.completions.create(model="fb-oai-first", messages=MSG, stream=True)
    with pytest.raises(openai.APIError) as exc:
        for _ in stream:
            pass
    assert time.monotonic() - start < 10
    assert "stream" in str(exc.value).lower() or exc.value.body


def test_mid_stream_reset_ends_the_client_stream(stack, fake_openai):
    fake_openai.script([{"reset_after_chunks": 2, "chunks": 6}])
    start = time.monotonic()
    got = []
    with pytest.raises((openai.APIError, openai.APIConnectionError)) as exc:
        for chunk in oai(stack).chat.completions.create(model="fb-oai-first", messages=MSG, stream=True):
            got.append(chunk)
    assert time.monotonic() - start < 10
    assert len(got) >= 1  # the client got the first chunks, then the reset ended its stream
    assert isinstance(exc.value, openai.APIConnectionError)


def test_garbage_json_from_provider_is_a_clean_502(stack, fake_openai, fake_anthropic):
    fake_openai.script([{"garbage": True}])
    with pytest.raises(openai.APIStatusError) as exc:
        oai(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert exc.value.status_code == 502 and exc.value.body["message"]
    fake_anthropic.script([{"garbage": True}])
    with pytest.raises(openai.APIStatusError) as exc:
        oai(stack).chat.completions.create(model="claude-haiku", messages=MSG)
    assert exc.value.status_code == 502


def test_failing_provider_is_ejected_and_recovers(stack, fake_openai, fake_anthropic):
    """breaker: 2 consecutive failures eject the primary for 1 s (config below); meanwhile requests
    start at the fallback without touching the primary; then traffic returns to the primary."""
    fake_openai.set_default({"status": 500})
    try:
        for _ in range(2):
            r = oai(stack).chat.completions.with_raw_response.create(model="fb-eject", messages=MSG)
            assert r.headers["x-sidegate-attempts"] == "2"
        n = len(fake_openai.requests)
        r = oai(stack).chat.completions.with_raw_response.create(model="fb-eject", messages=MSG)
        assert r.headers["x-sidegate-provider"] == "anthropic" and r.headers["x-sidegate-attempts"] == "1"
        assert len(fake_openai.requests) == n  # ejected: never tried
    finally:
        fake_openai.set_default(None)
    time.sleep(1.2)
    r = oai(stack).chat.completions.with_raw_response.create(model="fb-eject", messages=MSG)
    assert r.headers["x-sidegate-provider"] == "openai"


def test_retry_after_ejects_for_that_long(stack, fake_openai):
    fake_openai.script([{"status": 429, "error": "slow down", "retry_after": 1}])
    r = oai(stack).chat.completions.with_raw_response.create(model="fb-eject", messages=MSG)
    assert r.headers["x-sidegate-provider"] == "anthropic"
    n = len(fake_openai.requests)
    r = oai(stack).chat.completions.with_raw_response.create(model="fb-eject", messages=MSG)
    assert r.headers["x-sidegate-attempts"] == "1" and len(fake_openai.requests) == n
    time.sleep(1.2)
    r = oai(stack).chat.completions.with_raw_response.create(model="fb-eject", messages=MSG)
    assert r.headers["x-sidegate-provider"] == "openai"


def test_weighted_load_balancing_across_providers(stack, fake_openai, fake_anthropic):
    for _ in range(40):
        oai(stack).chat.completions.create(model="weighted", messages=MSG)
    a, b = len(fake_openai.requests), len(fake_anthropic.requests)
    assert a + b == 40 and 22 <= a <= 38, (a, b)  # weight 3:1 -> ~30:10


def test_provider_key_pool_rotates_keys(stack, fake_anthropic):
    for _ in range(4):
        oai(stack).chat.completions.create(model="pooled", messages=MSG)
    seen = [r.headers["x-api-key"] for r in fake_anthropic.requests]
    assert sorted(set(seen)) == ["pool-key-1", "pool-key-2"] and seen.count("pool-key-1") == 2

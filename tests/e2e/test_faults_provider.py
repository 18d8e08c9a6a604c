"""Fault matrix, provider rows not covered by test_fallback.py: single-provider models (no fallback),
every client API x provider API pair, malformed SSE, in-stream error events, truncation and resets
seen through the Anthropic SDK. The rule: a clean error in the client's format, never a 200 whose
body a client cannot parse."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import pytest
from fault_helpers import (
    ant,
    ant_stream,
    assert_well_formed_stream,
    body_for,
    error_message,
    is_terminal_error,
    oai,
    post,
)

pytestmark = pytest.mark.e2e
STACK_EXTRA = {
    "models": {
        "solo-oai": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}], "per_try_timeout_s": 1.0,
                     "breaker": {"failures": 1000, "honour_retry_after": False}},
        "solo-ant": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}], "per_try_timeout_s": 1.0,
                     "breaker": {"failures": 1000, "honour_retry_after": False}},
    },
    "defaults": {"guard": None},
}  # fmt: skip
PAIRS = [
    pytest.param("openai", "openai", id="oai-client/oai-provider"),
    pytest.param("openai", "anthropic", id="oai-client/ant-provider"),
    pytest.param("anthropic", "openai", id="ant-client/oai-provider"),
    pytest.param("anthropic", "anthropic", id="ant-client/ant-provider"),
]


def model_of(provider: str) -> str:
    return "solo-oai" if provider == "openai" else "solo-ant"


def fake_of(provider: str, fake_openai, fake_anthropic):
    return fake_openai if provider == "openai" else fake_anthropic


def _stream_text(stack, client: str, provider: str) -> tuple[Any, str]:
    r = post(stack, client, body_for(client, model_of(provider), stream=True), timeout=10)
    return r, r.text


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_malformed_sse_line_ends_stream_with_error(stack, fake_openai, fake_anthropic, client, provider):
    """The provider sends `data: {not json` mid-stream: the client must not receive it."""
    fake_of(provider, fake_openai, fake_anthropic).script([{"garbage": True, "chunks": 6}])
    r, text = _stream_text(stack, client, provider)
    assert r.status_code == 200  # headers were sent before the fault
    payloads = assert_well_formed_stream(client, text)
    assert payloads and is_terminal_error(client, payloads[-1]), text[-300:]


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_in_stream_error_event_reaches_client_as_terminal_error(stack, fake_openai, fake_anthropic, client, provider):
    fake_of(provider, fake_openai, fake_anthropic).script(
        [{"stream_error": {"after": 3, "type": "overloaded_error", "message": "provider overloaded mid-stream"}, "chunks": 6}]
    )
    start = time.monotonic()
    if client == "openai":
        with pytest.raises(openai.APIError) as exc:
            for _ in oai(stack).chat.completions.create(**body_for(client, model_of(provider)), stream=True):
                pass
    else:
        with pytest.raises(anthropic.APIError) as exc:
            ant_stream(stack, body_for(client, model_of(provider)))
    assert "provider overloaded mid-stream" in str(exc.value)
    assert time.monotonic() - start < 5
    fake_of(provider, fake_openai, fake_anthropic).script([{"stream_error": {"after": 3, "message": "x"}, "chunks": 6}])
    _, text = _stream_text(stack, client, provider)
    payloads = assert_well_formed_stream(client, text)
    assert is_terminal_error(client, payloads[-1]) and sum(is_terminal_error(client, p) for p in payloads) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_truncated_stream_anthropic_sdk_raises(stack, fake_openai, fake_anthropic, provider):
    """The provider closes the stream cleanly but early (no message_stop / [DONE])."""
    fake_of(provider, fake_openai, fake_anthropic).script([{"truncate": 3, "chunks": 6}])
    with pytest.raises(anthropic.APIError) as exc:
        ant_stream(stack, body_for("anthropic", model_of(provider)))
    assert "ended before the response was complete" in str(exc.value)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_mid_stream_reset_anthropic_sdk_returns(stack, fake_openai, fake_anthropic, provider):
    fake_of(provider, fake_openai, fake_anthropic).script([{"reset_after_chunks": 3, "chunks": 8}])
    start = time.monotonic()
    with pytest.raises(Exception) as exc:  # the SDK's API error or its HTTP library's
        ant_stream(stack, body_for("anthropic", model_of(provider)))
    assert isinstance(exc.value, anthropic.APIError) or type(exc.value).__name__ == "RemoteProtocolError", exc.value
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_garbage_json_anthropic_sdk_gets_502(stack, fake_openai, fake_anthropic, provider):
    fake_of(provider, fake_openai, fake_anthropic).script([{"garbage": True}])
    with pytest.raises(anthropic.APIStatusError) as exc:
        ant(stack).messages.create(**body_for("anthropic", model_of(provider)))
    assert exc.value.status_code == 502 and exc.value.body["type"] == "error"


FAULTS = [
    pytest.param({"status": 429, "error": "Rate limit reached", "retry_after": 3}, 429, id="429"),
    pytest.param({"status": 500, "error": "boom"}, 500, id="500"),
    pytest.param({"status": 503, "error": "overloaded"}, 503, id="503"),
    pytest.param({"hang": True, "hang_max_s": 5}, 504, id="hang"),
    pytest.param({"reset": True}, 503, id="reset"),
]


@pytest.mark.alone  # bounds a duration
@pytest.mark.parametrize(("fault", "status"), FAULTS)
@pytest.mark.parametrize(("client", "provider"), PAIRS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_provider_fault_without_fallback_is_a_clean_error(stack, fake_openai, fake_anthropic, client, provider,
                                                          fault, status, stream):  # fmt: skip
    fake_of(provider, fake_openai, fake_anthropic).script([fault])
    start = time.monotonic()
    r = post(stack, client, body_for(client, model_of(provider), stream=stream), timeout=10)
    assert time.monotonic() - start < 3.0  # per_try_timeout_s is 1 s
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    assert error_message(client, r)
    if status == 429:
        assert r.headers.get("retry-after") == "3"

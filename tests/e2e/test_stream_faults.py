"""Stream faults on every lane (issue 21, items 8 and 9), through a real Envoy.

Lanes: the direct lane (Envoy alone per try: OpenAI streams with `stream_options.include_usage`,
Anthropic passthrough; the router-level Lua of sidegate/bootstrap/stream.py watches the stream), the
full lane (per-try gRPC ext_proc: an OpenAI stream without include_usage, an Anthropic stream with a
model alias) and the translated streams both ways. Faults: a malformed event mid-stream (a broken
JSON object) after which the provider goes on, a garbage `data:` line after which it goes on, a
stream that ends cleanly before its terminal event. Each must reach the official SDK as its API
error (never a JSONDecodeError, never a silent partial answer), as exactly one terminal error event
in the client's format, with the quota and ledger settled. Every fully read stream has a time to
first token (metric and ledger) and is not `aborted`, also when the client hangs up the moment the
terminal event arrives (the end-of-stream race).
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from fault_helpers import (
    CHAT,
    MESSAGES,
    ant,
    assert_well_formed_stream,
    auth_headers,
    body_for,
    is_terminal_error,
    metric_sum,
    metrics_text,
    oai,
    post,
    reservations,
    tenant_usage,
    wait_until,
)

pytestmark = pytest.mark.e2e
STACK_EXTRA = {
    "models": {"claude-direct": {"routes": [{"provider": "anthropic"}]}},
    "defaults": {"guard": None},
    # The tests read what one request charged as the rise of the tenant's usage. Leases count
    # their whole grant as used (a request admitted from one lowers the usage by its true-up),
    # and a 60 s window lets earlier tests' tokens expire second by second while a test waits:
    # no leases and an hour's window keep the usage a plain sum of settled requests.
    "quota": {"window_s": 3600, "buckets": 60, "lease": {"enabled": False}},
}
UPSTREAM_STREAMS = "http.sidegateext_proc.upstream.streams_started"
USAGE = {"include_usage": True}
# (id, client API, model, extra body, direct lane?, provider)
LANES = [
    pytest.param("openai", "gpt-4o-mini", {"stream_options": USAGE}, True, "openai", id="direct-oai"),
    pytest.param("anthropic", "claude-direct", {}, True, "anthropic", id="direct-ant"),
    pytest.param("openai", "gpt-4o-mini", {}, False, "openai", id="full-oai"),
    pytest.param("anthropic", "claude-haiku", {}, False, "anthropic", id="full-ant"),
    pytest.param("openai", "claude-haiku", {}, False, "anthropic", id="oai-to-ant"),
    pytest.param("anthropic", "gpt-4o", {}, False, "openai", id="ant-to-oai"),
]
MALFORMED = "malformed stream event"
CUT = "ended before the response was complete"
FAULTS = [
    pytest.param({"bad_event": {"after": 3, "data": '{"id": "x", "choices": [{"delta": {"content": "cu'}}, MALFORMED,
                 id="malformed-event"),
    pytest.param({"bad_event": {"after": 3, "data": "<html>502 upstream hiccup</html>"}}, MALFORMED, id="garbage-line"),
    pytest.param({"truncate": 4}, CUT, id="cut-short"),
]  # fmt: skip
MAX_TOKENS = 3000
LINGER_S = 5.0
"""How long the provider holds its body open after the last event (the end-of-stream race)."""


def _fake(provider: str, fake_openai, fake_anthropic):
    return fake_openai if provider == "openai" else fake_anthropic


def _streams_started(stack) -> int:
    n = stack.stat(UPSTREAM_STREAMS)
    return n or 0


def _sdk_stream(stack, client: str, body: dict[str, Any]) -> None:
    """Read the whole stream with the official SDK (raises its API error on an error event)."""
    if client == "openai":
        for _ in oai(stack).chat.completions.create(**body):
            pass
    else:
        with ant(stack).messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as s:
            s.get_final_message()


def _new_records(stack, before: int, n: int = 1) -> list[Any]:
    recs = wait_until(lambda: (lambda all_: all_[before:] if len(all_) >= before + n else None)(stack.ledger()), 5)
    assert recs, "no ledger record"
    return recs


def _settled(stack) -> bool:
    return set(reservations(stack, "acme").values()) <= {"settled", "cancelled"}


def _quiet(stack) -> int:
    """Wait for the previous requests' records and settles to land; returns the ledger's length."""
    n, deadline = -1, time.monotonic() + 5
    while time.monotonic() < deadline:
        now = len(stack.ledger())
        if now == n and _settled(stack):
            break
        n = now
        time.sleep(0.3)
    return n


@pytest.mark.parametrize(("fault", "message"), FAULTS)
@pytest.mark.parametrize(("client", "model", "extra", "direct", "provider"), LANES)
def test_stream_fault_is_one_terminal_error_and_settled(
    stack, fake_openai, fake_anthropic, client, model, extra, direct, provider, fault, message
):
    fake = _fake(provider, fake_openai, fake_anthropic)
    body = body_for(client, model, "Tell me a story", stream=True, max_tokens=MAX_TOKENS, **extra)
    # 1. The official SDK raises its API error (not a JSONDecodeError, not a partial answer).
    fake.script([{**fault, "chunks": 8}])
    n_before = _quiet(stack)
    usage_before, streams_before = tenant_usage(stack, "acme")["tokens"], _streams_started(stack)
    exc_type = openai.APIError if client == "openai" else anthropic.APIError
    with pytest.raises(exc_type) as exc:
        _sdk_stream(stack, client, body)
    assert message in str(exc.value), exc.value
    # The lane is the one meant: the direct lane opens no per-try ext_proc stream.
    assert (_streams_started(stack) == streams_before) is direct
    # 2. Settled: the quota reservation (prompt + max_tokens) is replaced by what was streamed, and
    # the ledger has the request, not as a client abort.
    assert wait_until(lambda: _settled(stack), 5), reservations(stack, "acme")
    used = wait_until(lambda: (lambda u: u if u > usage_before else 0)(tenant_usage(stack, "acme")["tokens"]), 5)
    assert used and used - usage_before < MAX_TOKENS, (usage_before, used)
    (rec,) = _new_records(stack, n_before)
    assert (rec.model, rec.status, rec.stream, rec.aborted) == (model, 200, True, False), rec
    assert rec.ttft_ms is not None and rec.ttft_ms >= 0, rec
    # 3. On the wire: every event is JSON, exactly one terminal error, and it is the last event.
    fake.script([{**fault, "chunks": 8}])
    r = post(stack, client, body)
    assert r.status_code == 200
    payloads = assert_well_formed_stream(client, r.text)
    assert payloads and is_terminal_error(client, payloads[-1]), r.text[-400:]
    assert sum(is_terminal_error(client, p) for p in payloads) == 1, r.text
    assert message in payloads[-1]["error"]["message"]
    if client == "openai":
        assert "data: [DONE]" not in r.text
    else:
        assert "message_stop" not in r.text


@pytest.mark.alone  # bounds a duration
@pytest.mark.parametrize(("client", "model", "extra", "direct", "provider"), LANES)
def test_fully_read_streams_have_ttft_and_are_not_aborted(
    stack, fake_openai, fake_anthropic, client, model, extra, direct, provider
):
    """Fully read streams, N times: each has a TTFT (ledger and metric) and none is `aborted`. Half
    of them are read by a client that hangs up the moment the terminal event arrives while the
    provider's body ends later (the end-of-stream race: Envoy sees the client leave first)."""
    fake = _fake(provider, fake_openai, fake_anthropic)
    body = body_for(client, model, "hello", stream=True, **extra)
    metric = "gen_ai_server_time_to_first_token_seconds_count"
    ttft_before = metric_sum(metrics_text(stack), metric, gen_ai_request_model=model)
    n_before, n = _quiet(stack), 6
    for i in range(n):
        if i % 2:
            fake.script([{"chunks": 4, "linger_s": LINGER_S}])
            _read_to_terminal_and_hang_up(stack, client, body)
        else:
            fake.script([{"chunks": 4}])
            _sdk_stream(stack, client, body)
    recs = _new_records(stack, n_before, n)
    assert len(recs) == n, recs
    for rec in recs:
        assert (rec.model, rec.status, rec.aborted) == (model, 200, False), rec
        assert rec.ttft_ms is not None and 0 <= rec.ttft_ms < 5000, rec
        assert rec.output_tokens > 0, rec
    got = wait_until(lambda: metric_sum(metrics_text(stack), metric, gen_ai_request_model=model) - ttft_before >= n, 5)
    assert got, metric_sum(metrics_text(stack), metric, gen_ai_request_model=model) - ttft_before


def _read_to_terminal_and_hang_up(stack, client: str, body: dict[str, Any]) -> None:
    h = {"content-type": "application/json", **auth_headers(stack, client)}
    url = stack.base_url + (CHAT if client == "openai" else MESSAGES)
    terminal = b"data: [DONE]" if client == "openai" else b"event: message_stop"
    start = time.monotonic()
    with httpx.stream("POST", url, content=orjson.dumps(body), headers=h, timeout=10) as r:
        assert r.status_code == 200
        seen = b""
        for part in r.iter_raw():
            seen += part
            if terminal in seen:
                break  # leaving the block closes the connection before the provider's body ends
        assert terminal in seen, seen[-300:]
    assert time.monotonic() - start < LINGER_S - 1.0, "the terminal event came only with the end of the body"


@pytest.mark.parametrize(("client", "model", "extra", "provider"), [
    pytest.param("openai", "gpt-4o-mini", {"stream_options": USAGE}, "openai", id="direct-oai"),
    pytest.param("anthropic", "claude-direct", {}, "anthropic", id="direct-ant"),
])  # fmt: skip
def test_direct_lane_stream_cut_at_any_byte(stack, fake_openai, fake_anthropic, client, model, extra, provider):
    """The provider's bytes arrive in 7-byte pieces (events and lines cut anywhere): the direct
    lane's watch relays only complete lines, so a whole stream reaches the SDK intact, and a garbage
    line split across pieces is still caught before any of it reaches the client."""
    fake = _fake(provider, fake_openai, fake_anthropic)
    body = body_for(client, model, "one two three", stream=True, **extra)
    fake.script([{"write_size": 7, "content": "alpha beta gamma delta", "chunks": 4}])
    if client == "openai":
        text = "".join(c.choices[0].delta.content or "" for c in oai(stack).chat.completions.create(**body) if c.choices)
    else:
        with ant(stack).messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as s:
            text = "".join(b.text for b in s.get_final_message().content if b.type == "text")
    assert text == "alpha beta gamma delta"
    fake.script([{"write_size": 7, "chunks": 6, "bad_event": {"after": 3, "data": "<html>502 upstream hiccup</html>"}}])
    r = post(stack, client, body)
    payloads = assert_well_formed_stream(client, r.text)
    assert "hiccup" not in r.text and is_terminal_error(client, payloads[-1]), r.text[-400:]
    assert MALFORMED in payloads[-1]["error"]["message"]


@pytest.mark.alone  # bounds a duration
@pytest.mark.parametrize(("client", "model", "extra", "direct", "provider"), LANES)
def test_stream_reset_mid_way_is_a_connection_error_and_settled(
    stack, fake_openai, fake_anthropic, client, model, extra, direct, provider
):
    """The provider resets the connection mid-stream: Envoy resets the client's stream (no filter
    gets a last word after an upstream reset), so the client gets a connection error at once; the
    request is ledgered as aborted and its reservation settled to what was streamed."""
    fake = _fake(provider, fake_openai, fake_anthropic)
    body = body_for(client, model, "Tell me a story", stream=True, max_tokens=MAX_TOKENS, **extra)
    n_before = _quiet(stack)
    usage_before = tenant_usage(stack, "acme")["tokens"]
    fake.script([{"reset_after_chunks": 3, "chunks": 8}])
    start = time.monotonic()
    with pytest.raises(Exception) as exc:  # the SDK's API error or its HTTP library's
        _sdk_stream(stack, client, body)
    assert isinstance(exc.value, (openai.APIError, anthropic.APIError, httpx.TransportError)), repr(exc.value)
    assert time.monotonic() - start < 8  # a reset, not a hang until a timeout
    (rec,) = _new_records(stack, n_before)
    assert (rec.model, rec.stream, rec.aborted) == (model, True, True), rec
    assert wait_until(lambda: _settled(stack), 5), reservations(stack, "acme")
    used = wait_until(lambda: (lambda u: u if u > usage_before else 0)(tenant_usage(stack, "acme")["tokens"]), 5)
    assert used and used - usage_before < MAX_TOKENS, (usage_before, used)

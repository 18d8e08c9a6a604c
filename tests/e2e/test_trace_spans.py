"""Issue 27: Sidegate's spans in one trace with Envoy's and the client's, through real Envoy on
both fronts, for a translated stream with a fallback (OpenAI answers 500, Anthropic streams):
Sidegate's root under Envoy's span of the gateway call, its stage children and two provider tries
(the first failed), the GenAI attributes, TTFT as an event; a direct-lane request from Envoy's
access log; content only for an opted-in tenant; nothing of Sidegate's at sample_ratio 0."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from harness import FRONT_SERVICES, Stack, front_stack
from trace_helpers import FAST_EXPORT, SIDEGATE_CALL, SIDEGATE_SCOPE, client_traceparent

from sidegate.fakes.otlp import OtlpReceiverThread, ReceivedSpan

pytestmark = pytest.mark.e2e
MODEL = "trace-fb"
MSG = [{"role": "user", "content": "Say hello"}]
ERROR = 2
"""OTLP's Status.StatusCode ERROR."""


def extra(receiver: OtlpReceiverThread, **tracing: Any) -> dict[str, Any]:
    return {
        "env": dict(FAST_EXPORT),
        "observability": {"tracing": {"endpoint": receiver.endpoint, "content_tenants": ["globex"], **tracing}},
        "models": {MODEL: {"routes": [{"provider": "openai", "model": "gpt-4o-mini"},
                                      {"provider": "anthropic", "model": "claude-3-5-haiku"}],
                           "breaker": {"failures": 1000, "honour_retry_after": False}}},
    }  # fmt: skip


@pytest.fixture(scope="module", params=list(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic, receiver) -> Iterator[Stack]:
    yield from front_stack(request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url,
                           copy.deepcopy(extra(receiver)))  # fmt: skip


def stream_with_fallback(gw: Stack, fake_openai, tenant: str, traceparent: str) -> str:
    fake_openai.script([{"status": 500, "error": "boom"}])
    client = openai.OpenAI(
        base_url=gw.base_url + "/v1", api_key=gw.keys[tenant].key, max_retries=0, timeout=20
    )
    headers = {"traceparent": traceparent} if traceparent else {}
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MSG, stream=True, extra_headers=headers
    )
    assert raw.status_code == 200 and raw.headers["x-sidegate-attempts"] == "2"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert "hello" in text.lower()
    return text


def ours(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.scope == SIDEGATE_SCOPE]


def whole(receiver: OtlpReceiverThread, trace_id: str, tries: int) -> list[ReceivedSpan]:
    """The trace once Sidegate's root, its tries and the root's parent (Envoy's span of the gateway
    call) have arrived: each process and Envoy export in batches, on their own schedules."""
    (root,) = receiver.wait_spans(
        trace_id, pred=lambda s: s.scope == SIDEGATE_SCOPE and s.kind == "server", timeout_s=15
    )
    receiver.wait_spans(
        trace_id, count=tries, pred=lambda s: s.scope == SIDEGATE_SCOPE and s.kind == "client", timeout_s=15
    )
    receiver.wait_spans(trace_id, pred=lambda s: s.span_id == root.parent_span_id, timeout_s=15)
    return receiver.spans(trace_id)


def test_a_translated_stream_with_a_fallback_is_one_trace(gw, receiver, fake_openai) -> None:
    traceparent, trace_id, _ = client_traceparent()
    stream_with_fallback(gw, fake_openai, "acme", traceparent)
    spans = whole(receiver, trace_id, tries=2)
    (root,) = [s for s in ours(spans) if s.kind == "server"]
    (call,) = [s for s in spans if s.span_id == root.parent_span_id]
    assert call.scope != SIDEGATE_SCOPE  # Envoy's
    assert call.name == SIDEGATE_CALL[gw.cfg_data["services"]["front"]]
    (ingress,) = receiver.wait_spans(trace_id, pred=lambda s: s.span_id == call.parent_span_id, timeout_s=15)
    assert (
        ingress.kind == "server" and ingress.parent_span_id == traceparent.split("-")[2]
    )  # the client's span
    assert root.name == f"chat {MODEL}"
    assert {s.trace_id for s in ours(receiver.spans())} == {trace_id}  # one trace: the client's
    children = [s for s in ours(spans) if s is not root]
    assert all(s.parent_span_id == root.span_id for s in children)
    stages = {s.name for s in children if s.kind == "internal"}
    assert {"sidegate.parse", "sidegate.route", "sidegate.quota", "sidegate.lane"} <= stages
    tries = sorted(
        (s for s in children if s.kind == "client"), key=lambda s: s.attributes["sidegate.attempt"]
    )
    assert [t.attributes["sidegate.attempt"] for t in tries] == [1, 2]
    failed, streamed = (t.attributes for t in tries)
    assert failed["gen_ai.provider.name"] == "openai" and failed["error.type"] == "500"
    assert failed["http.response.status_code"] == 500 and tries[0].status_code == ERROR
    assert (
        streamed["gen_ai.provider.name"] == "anthropic"
        and streamed["gen_ai.request.model"] == "claude-3-5-haiku"
    )
    assert streamed["gen_ai.operation.name"] == "chat" and "error.type" not in streamed
    assert streamed["gen_ai.usage.input_tokens"] > 0 and streamed["gen_ai.usage.output_tokens"] > 0
    assert [name for name, _ in tries[1].events] == ["sidegate.first_token"]  # TTFT, and no content
    assert tries[0].start_ns <= tries[0].end_ns <= tries[1].start_ns <= tries[1].end_ns <= root.end_ns
    r = root.attributes
    assert (
        r["gen_ai.request.model"] == MODEL
        and r["sidegate.tenant"] == "acme"
        and r["gen_ai.request.stream"] is True
    )
    assert (
        r["sidegate.attempts"] == 2
        and r["sidegate.fallback"] is True
        and r["http.response.status_code"] == 200
    )
    assert (
        r["gen_ai.provider.name"] == "anthropic"
        and r["gen_ai.usage.output_tokens"] == streamed["gen_ai.usage.output_tokens"]
    )
    assert not any(
        name == "gen_ai.client.inference.operation.details" for s in ours(spans) for name, _ in s.events
    )


def test_content_is_recorded_for_an_opted_in_tenant_only(gw, receiver, fake_openai) -> None:
    traceparent, trace_id, _ = client_traceparent()
    text = stream_with_fallback(gw, fake_openai, "globex", traceparent)
    spans = ours(whole(receiver, trace_id, tries=2))
    streamed = next(s for s in spans if s.kind == "client" and s.attributes["sidegate.attempt"] == 2)
    (content,) = [a for name, a in streamed.events if name == "gen_ai.client.inference.operation.details"]
    assert orjson.loads(content["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hello"}]}
    ]
    (answer,) = orjson.loads(content["gen_ai.output.messages"])
    assert answer["parts"][0]["content"] == text and answer["finish_reason"] == "stop"
    assert streamed.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    dumped = repr(spans).encode()
    assert gw.keys["globex"].key.encode() not in dumped and b"SECRET" not in dumped  # never a key


def test_a_direct_lane_request_is_traced_from_envoys_access_log(gw, receiver) -> None:
    """No per-try Python: the try span and the root come from the access log entry's metadata."""
    traceparent, trace_id, _ = client_traceparent()
    client = openai.OpenAI(
        base_url=gw.base_url + "/v1", api_key=gw.keys["acme"].key, max_retries=0, timeout=20
    )
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MSG, extra_headers={"traceparent": traceparent}
    )
    spans = ours(whole(receiver, trace_id, tries=1))
    (root,) = [s for s in spans if s.kind == "server"]
    (tried,) = [s for s in spans if s.kind == "client"]
    assert root.attributes["sidegate.lane"] == "direct" and tried.parent_span_id == root.span_id
    assert tried.attributes["gen_ai.usage.input_tokens"] > 0 and root.attributes["sidegate.attempts"] == 1


def test_sample_ratio_zero_records_no_sidegate_span(
    tmp_path_factory, fake_openai, fake_anthropic, receiver
) -> None:
    data = extra(receiver, sample_ratio=0.0, service_name="sidegate-unsampled")
    for gw in front_stack(
        "ext_proc", tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, data
    ):
        stream_with_fallback(gw, fake_openai, "acme", traceparent="")
    # The stack has stopped: its exporters flushed whatever they held.
    assert not ours(receiver.spans(service="sidegate-unsampled"))

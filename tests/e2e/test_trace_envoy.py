"""Envoy's OpenTelemetry tracer through a real Envoy, on both fronts, into an OTLP receiver built
on the official protos (sidegate/fakes/otlp.py): a client's `traceparent` is continued (its trace
id, its span as parent), Envoy's call to the Sidegate services and each provider try are child
spans of the request's, the sampled flag of the client's parent decides (sample ratio 0 and an
unsampled parent: nothing exported), no sampled parent at ratio 0: nothing either, and a malformed
`traceparent` is not continued.

Which of these spans the Python services take as the parent of their own, and how, is in
docs/observability.md ("How a trace is joined") and tests/unit/test_traceparent.py."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from harness import Stack, front_stack
from trace_helpers import FAST_EXPORT, SIDEGATE_CALL, SIDEGATE_SCOPE, client_traceparent

from sidegate.fakes.otlp import OtlpReceiverThread, ReceivedSpan

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "Say hi"}]
SERVICE = "sidegate-e2e"
MODELS = {
    "chain": {"routes": [{"provider": "openai", "model": "gpt-4o-mini", "priority": 0},
                         {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "priority": 1}]},
}  # fmt: skip


def _envoys(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.scope != SIDEGATE_SCOPE]


def _is_ingress(s: ReceivedSpan) -> bool:
    return s.kind == "server" and s.scope != SIDEGATE_SCOPE


def oai(stack: Stack, traceparent: str | None = None) -> openai.OpenAI:
    headers = {"traceparent": traceparent} if traceparent else {}
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0,
                         default_headers=headers)  # fmt: skip


def _tracing(receiver: OtlpReceiverThread, ratio: float) -> dict:
    return {"observability": {"tracing": {"endpoint": receiver.endpoint, "sample_ratio": ratio, "service_name": SERVICE}},
            "models": MODELS, "env": dict(FAST_EXPORT)}  # fmt: skip


@pytest.fixture(scope="module", params=["ext_proc", "http"])
def traced(request, tmp_path_factory, fake_openai, fake_anthropic, receiver) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("traced")
    yield from front_stack(request.param, tmp, fake_openai.url, fake_anthropic.url, _tracing(receiver, 1.0))


@pytest.fixture(scope="module")
def unsampled(tmp_path_factory, fake_openai, fake_anthropic, receiver) -> Iterator[Stack]:
    """Tracing on, sample ratio 0: only a client's sampled parent is recorded."""
    tmp = tmp_path_factory.mktemp("ratio0")
    yield from front_stack("ext_proc", tmp, fake_openai.url, fake_anthropic.url, _tracing(receiver, 0.0))


def _front(stack: Stack) -> str:
    return stack.cfg_data["services"]["front"]


def _ingress(spans: list[ReceivedSpan]) -> ReceivedSpan:
    (ingress,) = [s for s in spans if _is_ingress(s)]
    return ingress


def _trace(receiver: OtlpReceiverThread, trace_id: str, *names: str) -> list[ReceivedSpan]:
    """The spans of a trace once its request span and the spans named `names` arrived."""
    receiver.wait_spans(trace_id, pred=_is_ingress, timeout_s=15)
    for name in names:
        receiver.wait_spans(trace_id, pred=lambda s, n=name: s.name.startswith(n), timeout_s=5)
    return receiver.spans(trace_id)


def test_envoy_continues_the_clients_trace_on_both_fronts(traced, receiver, fake_anthropic):
    tp, trace_id, client_span = client_traceparent()
    r = oai(traced, tp).chat.completions.create(model="claude-haiku", messages=MSG, max_tokens=20)
    assert r.choices[0].message.content
    sent = fake_anthropic.requests[-1].headers
    assert "traceparent" not in sent and "tracestate" not in sent  # no trace context leaves for a provider
    # ingress, the call to the gateway stage, the try (and the per-try stage's call, ext_proc lane)
    spans = _trace(receiver, trace_id, SIDEGATE_CALL[_front(traced)], "router provider.anthropic")
    ingress = _ingress(spans)
    assert ingress.parent_span_id == client_span  # Envoy's request span is the client's span's child
    assert ingress.service == SERVICE and ingress.name == "ingress"
    assert ingress.attributes["http.status_code"] == "200" and ingress.attributes["upstream_cluster"]
    names = {s.name for s in spans}
    assert SIDEGATE_CALL[_front(traced)] in names, names
    tries = [s for s in spans if s.name.startswith("router provider.anthropic")]
    assert len(tries) == 1, names
    # Every span of Envoy's hangs under the request's span: one trace, one root (the client's).
    assert all(s.parent_span_id == ingress.span_id for s in _envoys(spans) if s is not ingress)
    assert all(s.trace_id == trace_id for s in spans)


def test_a_stream_with_a_fallback_is_one_trace_with_a_span_per_try(
    traced, receiver, fake_openai, fake_anthropic
):
    fake_openai.script([{"status": 500, "error": "primary down"}])
    tp, trace_id, _ = client_traceparent()
    stream = oai(traced, tp).chat.completions.create(model="chain", messages=MSG, max_tokens=20, stream=True,
                                                     stream_options={"include_usage": True})  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    spans = receiver.wait_spans(trace_id, pred=lambda s: s.name.startswith("router "), count=2, timeout_s=15)
    tries = sorted((s for s in spans if s.name.startswith("router ")), key=lambda s: s.start_ns)
    assert [t.name for t in tries] == ["router provider.openai egress", "router provider.anthropic egress"]
    assert (
        tries[0].attributes["http.status_code"] == "500" and tries[1].attributes["http.status_code"] == "200"
    )
    ingress = _ingress(receiver.wait_spans(trace_id, pred=_is_ingress))
    assert {t.parent_span_id for t in tries} == {ingress.span_id}


def test_without_a_client_context_envoy_starts_the_trace(traced, receiver, fake_openai):
    r = oai(traced).chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=20)
    assert r.choices[0].message.content
    (ingress,) = receiver.wait_spans(pred=_is_ingress, timeout_s=15)
    assert ingress.parent_span_id == ""  # a root span: Envoy's own trace
    call = SIDEGATE_CALL[_front(traced)]
    assert call in {s.name for s in _trace(receiver, ingress.trace_id, call)}
    assert "traceparent" not in fake_openai.requests[-1].headers  # the direct lane: nothing to the provider


def test_a_malformed_client_context_is_not_continued(traced, receiver):
    """Envoy 1.40 neither continues nor replaces a malformed traceparent: it does not trace that
    request at all (measured), and the Python side ignores it too (tests/unit/test_traceparent.py):
    Sidegate's own spans start a trace of their own (sampled by the ratio, here 1), never the bad one."""
    bad = "00-" + "0" * 32 + "-" + "b" * 16 + "-01"  # an all-zero trace id is invalid (W3C)
    r = oai(traced, bad).chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=20)
    assert r.choices[0].message.content  # served all the same
    spans = receiver.quiet(2.5)
    assert _envoys(spans) == []
    (root,) = [s for s in spans if s.kind == "server"]
    assert root.parent_span_id == "" and {s.trace_id for s in spans} == {root.trace_id} != {"0" * 32}


def test_an_unsampled_client_trace_is_not_exported(unsampled, traced, receiver):
    """Parent-based: the client's unsampled flag wins at any ratio; at ratio 0 nothing of Envoy's own."""
    for stack in (unsampled, traced):
        tp, _, _ = client_traceparent(sampled=False)
        oai(stack, tp).chat.completions.create(model="claude-haiku", messages=MSG, max_tokens=20)
    oai(unsampled).chat.completions.create(model="claude-haiku", messages=MSG, max_tokens=20)
    assert receiver.quiet(2.5) == []  # Envoy's tracer flushes every second


def test_a_sampled_client_trace_is_recorded_at_ratio_zero(unsampled, receiver):
    tp, trace_id, client_span = client_traceparent()
    oai(unsampled, tp).chat.completions.create(model="claude-haiku", messages=MSG, max_tokens=20)
    spans = _trace(receiver, trace_id, SIDEGATE_CALL["ext_proc"], "router provider.anthropic")
    assert _ingress(spans).parent_span_id == client_span


def test_envoy_exports_through_its_collector_cluster(traced, receiver):
    tp, trace_id, _ = client_traceparent()
    oai(traced, tp).chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=20)
    _trace(receiver, trace_id)
    assert (traced.stat("cluster.otel_collector.upstream_rq_total") or 0) >= 1
    assert any(a.startswith("OTel-OTLP-Exporter-Envoy/") for a in receiver.user_agents), receiver.user_agents


def test_without_tracing_nothing_is_rendered_or_sent(stack, receiver, fake_anthropic):
    """The default stack (no observability.tracing): a client's traceparent is served as any header,
    Envoy has no tracer nor collector cluster, and nothing reaches a receiver."""
    tp, trace_id, _ = client_traceparent()
    r = oai(stack, tp).chat.completions.create(model="claude-haiku", messages=MSG, max_tokens=20)
    assert r.choices[0].message.content
    assert "traceparent" not in fake_anthropic.requests[-1].headers  # the client's goes no further either
    assert stack.stat("cluster.otel_collector.upstream_rq_total") is None
    assert "opentelemetry" not in (stack.workdir / "envoy.yaml").read_text()
    served = str(stack.envoy_config("dynamic_listeners")) + str(stack.envoy_config("dynamic_active_clusters"))
    assert "sidegate" in served and "opentelemetry" not in served  # what Envoy got over xDS has none either
    # Only this request's trace: the module's traced stacks export to the same receiver, and a batch
    # it refused (test_a_collector_that_is_down_costs_requests_nothing) is sent again by their
    # exporter seconds later, into whichever test runs then.
    assert [s for s in receiver.quiet(1.5) if s.trace_id == trace_id] == []


def test_a_collector_that_is_down_costs_requests_nothing(traced, receiver):
    """Envoy exports off the request path: refused exports lose spans, never a request."""
    receiver.unavailable = True
    for _ in range(3):
        tp, _, _ = client_traceparent()
        r = oai(traced, tp).chat.completions.create(model="claude-haiku", messages=MSG, max_tokens=20)
        assert r.choices[0].message.content
    receiver.quiet(1.5)
    assert receiver.spans() == []

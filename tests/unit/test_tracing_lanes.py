"""Sidegate's spans from every lane's Completion: the try lane (HTTP front: the gateway's metadata
comes back in a header, as JSON), the direct lane (Envoy's access log entry: metadata as a
protobuf Struct), a Gemini client and an embeddings request; and the feature's lifecycle."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from extproc.direct import completion
from extproc.trylane import TryLane
from sidegate import config, wire
from sidegate.core.context import RequestContext
from sidegate.core.feature import collect
from sidegate.core.intake import EMBEDDINGS
from sidegate.core.pipeline import Forward, Gateway
from sidegate.core.traceparent import CONTENT_KEY
from sidegate.core.tries import TryStage
from sidegate.envoy_pb import struct
from sidegate.errors import Api
from sidegate.features.lane import LaneFeature
from sidegate.features.tracing.feature import TracingFeature
from sidegate.features.tracing.sampling import parse_traceparent
from sidegate.wire import TryWire

CLIENT_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ENV = {"OPENAI_API_KEY": "sk-openai-secret", "ANTHROPIC_API_KEY": "sk-ant-secret"}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def cfg(**tracing: Any) -> config.SidegateConfig:
    return config.parse({
        "services": {"auth": "inline", "front": "http"},
        "providers": {
            "openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
            "anthropic": {"api": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
        },
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]},
                   "claude": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]}},
        "observability": {"tracing": {"endpoint": "127.0.0.1:4317", **tracing}},
    }, env=ENV)  # fmt: skip


class Parse:
    name = "parse"

    def __init__(self, body: dict[str, Any], api: Api = Api.OPENAI, endpoint: str = "completions"):
        self.body, self.api, self.endpoint = body, api, endpoint
        self.endpoints = frozenset({endpoint})

    async def on_request(self, ctx: RequestContext) -> None:
        ctx.body, ctx.model, ctx.stream, ctx.route = (
            self.body,
            str(self.body.get("model", "")),
            False,
            self.body.get("model", ""),
        )
        if self.endpoint != "completions":  # as the intake says it (sidegate/core/intake.py)
            ctx.meta["endpoint"] = self.endpoint


def traced(**tracing: Any) -> tuple[TracingFeature, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    feature = TracingFeature(cfg(**tracing), processor=SimpleSpanProcessor(exporter))
    asyncio.run(feature.start())
    return feature, exporter


def forward(feature: TracingFeature, *stages: object, api: Api = Api.OPENAI, endpoint: str = "completions",
            path: str = "/v1/chat/completions") -> Forward:  # fmt: skip
    ctx = RequestContext(path=path, method="POST", headers={}, api=api, endpoint=endpoint, tenant="acme",
                         request_id="rid-9", traceparent=CLIENT_TP)  # fmt: skip
    out = asyncio.run(Gateway(hooks=collect([*stages, feature])).run(ctx))
    assert isinstance(out, Forward)
    return out


def test_the_try_lanes_tries_parent_under_the_root_with_content() -> None:
    feature, exporter = traced(content_tenants=["*"])
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
    out = forward(feature, Parse(body), LaneFeature(cfg()))
    assert out.meta["lane"] == "try" and out.meta[CONTENT_KEY] is True
    root_id = parse_traceparent(out.meta["traceparent"])[1]
    tl = TryLane(TryStage(feature_cfg := cfg(), [feature.on_complete], on_try=(feature.on_try,)), worker=1)
    assert feature_cfg.services.front == "http"
    call = {"x-sidegate-meta": orjson.dumps(out.meta).decode(), "x-sidegate-cluster": "provider.anthropic~try",
            "x-sidegate-attempt": "1"}  # fmt: skip
    key = tl.handle("/try/request", call, orjson.dumps(body)).headers["x-sidegate-try"]
    answer = orjson.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
                           "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                           "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 2}})  # fmt: skip
    tl.handle("/try/response", {"x-sidegate-try": key, TryWire.STATUS: "200", "x-sidegate-h-content-type": "application/json"},
              answer)  # fmt: skip
    spans = exporter.get_finished_spans()
    tried = next(s for s in spans if s.kind is SpanKind.CLIENT)
    root = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert tried.parent.span_id == root_id == root.context.span_id and root.name == "chat claude"
    assert tried.name == "chat claude-3-5-haiku-20241022" and root.attributes["sidegate.lane"] == "try"
    (details,) = [e for e in tried.events if e.name == "gen_ai.client.inference.operation.details"]
    assert orjson.loads(details.attributes["gen_ai.output.messages"])[0]["parts"] == [
        {"type": "text", "content": "hello"}
    ]
    assert tried.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert not feature._content  # the try's content hook is let go


def test_the_direct_lanes_access_log_entry_parents_under_the_root() -> None:
    feature, exporter = traced()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    out = forward(feature, Parse(body))
    meta = {**out.meta, "lane": "direct"}
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.metadata.filter_metadata[wire.META_NS].CopyFrom(struct(meta))
    e.common_properties.metadata.filter_metadata[wire.USAGE_NS].CopyFrom(
        struct({"prompt_tokens": 7, "completion_tokens": 2, "model": "gpt-4o-mini-2024-07-18"})
    )
    e.common_properties.upstream_cluster = "provider.openai~direct"
    e.common_properties.upstream_request_attempt_count = 2
    e.common_properties.time_to_last_downstream_tx_byte.FromMilliseconds(40)
    e.response.response_code.value = 200
    done = completion(e)
    assert done is not None
    feature.on_complete(done)
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.kind is SpanKind.SERVER)
    tried = next(s for s in spans if s.kind is SpanKind.CLIENT)
    assert tried.parent.span_id == root.context.span_id == parse_traceparent(out.meta["traceparent"])[1]
    assert root.parent.span_id == parse_traceparent(CLIENT_TP)[1]
    assert root.attributes["sidegate.attempts"] == 2 and root.attributes["sidegate.fallback"] is True
    assert tried.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert (root.attributes["gen_ai.usage.input_tokens"], root.attributes["gen_ai.usage.output_tokens"]) == (
        7,
        2,
    )


def test_operation_names_follow_the_endpoint_and_the_client_api() -> None:
    feature, exporter = traced()
    gemini = forward(feature, Parse({"model": "gpt-4o-mini", "contents": []}, api=Api.GEMINI), api=Api.GEMINI,
                     path="/v1beta/models/gpt-4o-mini:generateContent")  # fmt: skip
    emb = forward(feature, Parse({"model": "gpt-4o-mini", "input": "x"}, endpoint=EMBEDDINGS), endpoint=EMBEDDINGS,
                  path="/v1/embeddings")  # fmt: skip
    for out in (gemini, emb):
        stage = TryStage(cfg(), [feature.on_complete])
        t = stage.start_try(dict(out.meta), "provider.openai", 1)
        t.response_headers(503, {"content-type": "application/json"})
        t.response_body(b'{"error": {"message": "busy"}}')
    names = {s.name for s in exporter.get_finished_spans() if s.kind is not SpanKind.INTERNAL}
    assert names == {"generate_content gpt-4o-mini", "embeddings gpt-4o-mini"}
    models_ctx = RequestContext(
        path="/v1/models", method="GET", headers={}, endpoint="models", traceparent=CLIENT_TP
    )
    assert feature.trace(models_ctx) is None  # not a GenAI operation: no trace of Sidegate's


class Stuck(SpanExporter):
    """A collector that does not answer for 3 s: shutdown must not wait for it."""

    def export(self, spans: Any) -> SpanExportResult:
        time.sleep(3)
        return SpanExportResult.FAILURE


@pytest.mark.alone  # bounds a duration
def test_close_is_bounded_by_the_export_timeout() -> None:
    feature = TracingFeature(cfg(timeout_s=0.2), exporter=Stuck())
    ctx = RequestContext(path="/v1/chat/completions", method="POST", headers={}, traceparent=CLIENT_TP)

    async def go() -> float:
        await feature.start()
        trace = feature.trace(ctx)
        assert trace is not None
        trace.step("parse", time.perf_counter(), time.perf_counter())
        trace.end(ctx, None)
        await asyncio.sleep(0.05)  # the stage span is made and queued; the exporter thread takes it
        started = time.monotonic()
        await feature.close()
        assert feature.writer is None and feature.trace(ctx) is None
        return time.monotonic() - started

    assert asyncio.run(go()) < 2.5  # the bound: timeout_s + 1 s

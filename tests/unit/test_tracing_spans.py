"""Sidegate's spans (sidegate/features/tracing/) without Envoy: the SDK's in-memory exporter sees
the span tree (root, gateway stages, provider tries) with the GenAI attributes, the sampling rules,
content only for opted-in tenants, and the Completions of every lane (per-try stage, try lane,
direct lane's access log, the gateway's own answers)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidegate import config
from sidegate.app import default_features
from sidegate.core.completion import Completion
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import collect
from sidegate.core.pipeline import Forward, Gateway
from sidegate.core.traceparent import CONTENT_KEY, ROOT_KEY
from sidegate.core.tries import TryStage
from sidegate.features.tracing.feature import TracingFeature
from sidegate.features.tracing.sampling import Sampler, parse_traceparent
from sidegate.translate.base import Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "translate" / "openai_anthropic" / "stream_text_usage"
CLIENT_TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
        "stream": True}  # fmt: skip


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")


def cfg(**tracing: Any) -> config.SidegateConfig:
    return config.parse({
        "services": {"auth": "ext_authz"},  # the tenant comes with the request, as from ext_authz
        "providers": {
            "openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
            "anthropic": {"api": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
        },
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}, {"provider": "anthropic", "model": "claude-sonnet-4-5"}]}},
        "observability": {"tracing": {"endpoint": "127.0.0.1:4317", **tracing}},
    }, env={"OPENAI_API_KEY": "sk-openai-secret", "ANTHROPIC_API_KEY": "sk-ant-secret"})  # fmt: skip


class Stage:
    """A request hook that takes a little time (and may refuse or answer)."""

    def __init__(self, name: str, reply: Reply | None = None):
        self.name, self.reply = name, reply

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        await asyncio.sleep(0)
        if self.name == "parse":
            ctx.body, ctx.model, ctx.stream = dict(BODY), "gpt-4o-mini", True
        return self.reply


class Traced:
    def __init__(self, **tracing: Any):
        self.cfg = cfg(**tracing)
        self.exporter = InMemorySpanExporter()
        self.feature = TracingFeature(self.cfg, processor=SimpleSpanProcessor(self.exporter))
        asyncio.run(self.feature.start())
        self.stage = TryStage(self.cfg, [self.feature.on_complete], on_try=(self.feature.on_try,))

    def gateway(
        self, *stages: Stage, tenant: str = "acme", traceparent: str = CLIENT_TP
    ) -> tuple[RequestContext, Any]:
        ctx = RequestContext(path="/v1/chat/completions", method="POST", headers={}, tenant=tenant,
                             request_id="rid-1", traceparent=traceparent)  # fmt: skip
        gw = Gateway(hooks=collect([*stages, self.feature]))
        return ctx, asyncio.run(gw.run(ctx))

    def failed_then_streamed(self, meta: dict[str, Any]) -> None:
        """The model's chain: openai answers 500, anthropic streams (translated to OpenAI's SSE)."""
        body = orjson.dumps(BODY)
        first = self.stage.start_try(dict(meta), "provider.openai", 1)
        first.request_headers()
        first.request_body(body)
        first.response_headers(500, {"content-type": "application/json"})
        first.response_body(b'{"error": {"message": "boom", "type": "server_error"}}')
        second = self.stage.start_try(dict(meta), "provider.anthropic", 2)
        second.request_headers()
        second.request_body(body)
        second.response_headers(200, {"content-type": "text/event-stream"})
        raw = (FIXTURES / "stream.sse").read_bytes()
        cut = raw.index(b"event: content_block_delta")
        second.response_chunk(raw[:cut], False)
        second.response_chunk(raw[cut:], True)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def close(self) -> None:
        asyncio.run(self.feature.close())


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_no_feature_without_an_endpoint() -> None:
    plain = config.parse({"services": {"auth": "ext_authz"}, "providers": {}, "models": {}})
    assert TracingFeature.from_config(plain) is None
    assert not any(f.name == "tracing" for f in default_features(plain))
    assert any(f.name == "tracing" for f in default_features(cfg()))


def test_a_translated_stream_with_a_fallback_is_one_tree_under_the_clients_span() -> None:
    t = Traced()
    _, out = t.gateway(Stage("parse"), Stage("route"), Stage("quota"))
    assert isinstance(out, Forward)
    meta = out.meta
    root_tp = parse_traceparent(meta["traceparent"])
    client = parse_traceparent(CLIENT_TP)
    assert root_tp is not None and client is not None
    assert root_tp[0] == client[0] and root_tp[1] != client[1]  # same trace, the root's own span id
    assert meta[ROOT_KEY] == f"{client[1]:016x}"
    stages = t.spans()
    assert [s.name for s in stages] == [
        "sidegate.parse",
        "sidegate.route",
        "sidegate.quota",
    ]  # before any try
    t.failed_then_streamed(meta)
    spans = by_name(t.spans())
    root = spans["chat gpt-4o-mini"]
    assert root.kind is SpanKind.SERVER
    assert root.context.trace_id == client[0] and root.context.span_id == root_tp[1]
    assert root.parent is not None and root.parent.span_id == client[1]
    for s in stages:
        assert s.parent is not None and s.parent.span_id == root_tp[1] and s.kind is SpanKind.INTERNAL
        assert root.start_time <= s.start_time <= s.end_time <= root.end_time
    streamed = spans["chat claude-sonnet-4-5"]
    tries = [s for s in t.spans() if s.kind is SpanKind.CLIENT]
    assert len(tries) == 2
    failed = next(s for s in tries if s.attributes["sidegate.attempt"] == 1)
    assert failed.name == "chat gpt-4o-mini" and failed.parent.span_id == root_tp[1]
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert failed.attributes["http.response.status_code"] == 500 and failed.attributes["error.type"] == "500"
    assert failed.status.status_code is StatusCode.ERROR
    a = streamed.attributes
    assert streamed.parent.span_id == root_tp[1] and a["sidegate.attempt"] == 2
    assert a["gen_ai.provider.name"] == "anthropic" and a["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert (a["server.address"], a["server.port"]) == ("api.anthropic.com", 443)
    assert a["gen_ai.response.model"] == "claude-sonnet-4-5" and a["gen_ai.operation.name"] == "chat"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (25, 15)
    assert "error.type" not in a
    (first_token,) = [e for e in streamed.events if e.name == "sidegate.first_token"]
    assert first_token.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert streamed.start_time <= first_token.timestamp <= streamed.end_time
    r = root.attributes
    assert r["sidegate.tenant"] == "acme" and r["sidegate.attempts"] == 2 and r["sidegate.fallback"] is True
    assert r["gen_ai.provider.name"] == "anthropic" and r["gen_ai.request.model"] == "gpt-4o-mini"
    assert r["http.response.status_code"] == 200 and r["gen_ai.request.stream"] is True
    assert (r["gen_ai.usage.input_tokens"], r["gen_ai.usage.output_tokens"]) == (25, 15)
    assert not any(e.name == "gen_ai.client.inference.operation.details" for s in t.spans() for e in s.events)
    assert {s.resource.attributes["service.name"] for s in t.spans()} == {"sidegate"}
    t.close()


def test_content_only_for_an_opted_in_tenant() -> None:
    t = Traced(content_tenants=["acme"])
    _, other = t.gateway(Stage("parse"), tenant="globex")
    assert CONTENT_KEY not in other.meta
    _, out = t.gateway(Stage("parse"))
    assert out.meta[CONTENT_KEY] is True
    t.failed_then_streamed(out.meta)
    streamed = next(s for s in t.spans() if s.name == "chat claude-sonnet-4-5")
    (details,) = [e for e in streamed.events if e.name == "gen_ai.client.inference.operation.details"]
    assert orjson.loads(details.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi there"}]}
    ]
    assert orjson.loads(details.attributes["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "be brief"}
    ]
    (answer,) = orjson.loads(details.attributes["gen_ai.output.messages"])
    assert (
        answer["parts"] == [{"type": "text", "content": "Hello, wörld 👋 — ok"}]
        and answer["finish_reason"] == "stop"
    )
    assert streamed.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    dumped = b"".join(orjson.dumps(dict(s.attributes)) + orjson.dumps([dict(e.attributes) for e in s.events])
                      for s in t.spans())  # fmt: skip
    assert b"sk-openai-secret" not in dumped and b"sk-ant-secret" not in dumped
    t.close()


class InlineAuth(Stage):
    """Inline auth: the tenant is named by a request hook, after the request was sampled."""

    def __init__(self, tenant: str):
        super().__init__("auth")
        self.tenant = tenant

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        ctx.tenant = self.tenant
        return None


def test_content_decided_once_inline_auth_names_the_tenant() -> None:
    t = Traced(content_tenants=["acme"])
    seen: dict[str, Any] = {}

    class Lane(Stage):  # what the lane step sees: whether the request may take the direct lane
        async def on_request(self, ctx: RequestContext) -> Reply | None:
            seen[ctx.tenant] = ctx.meta.get(CONTENT_KEY)
            return None

    _, out = t.gateway(InlineAuth("acme"), Stage("parse"), Lane("lane"), tenant="")
    assert out.meta[CONTENT_KEY] is True and seen["acme"] is True
    _, other = t.gateway(InlineAuth("globex"), Stage("parse"), Lane("lane"), tenant="")
    assert CONTENT_KEY not in other.meta and seen["globex"] is None
    t.close()


def test_sampling_follows_the_parent_else_the_ratio() -> None:
    unsampled = CLIENT_TP[:-2] + "00"
    t = Traced(sample_ratio=1.0)
    _, out = t.gateway(Stage("parse"), traceparent=unsampled)
    assert ROOT_KEY not in out.meta and out.meta["traceparent"] == unsampled
    t.failed_then_streamed(out.meta)
    assert t.spans() == []
    _, fresh = t.gateway(Stage("parse"), traceparent="")
    assert fresh.meta[ROOT_KEY] == ""  # a trace of its own: the root has no parent
    t.failed_then_streamed(fresh.meta)
    root = next(s for s in t.spans() if s.kind is SpanKind.SERVER)
    assert root.parent is None and f"{root.context.trace_id:032x}" in fresh.meta["traceparent"]
    t.close()
    none = Traced(sample_ratio=0.0)
    _, out = none.gateway(Stage("parse"), traceparent="")
    assert ROOT_KEY not in out.meta and "traceparent" not in out.meta
    _, out = none.gateway(Stage("parse"))  # a sampled parent wins over the ratio
    assert ROOT_KEY in out.meta
    none.close()
    s = Sampler(0.25)
    hits = sum(s.sample("") is not None for _ in range(4000))
    assert 700 < hits < 1300
    assert Sampler(1.0).sample("garbage") is not None and Sampler(0.0).sample("garbage") is None


def test_the_gateways_own_answer_ends_the_root_at_the_gateway() -> None:
    t = Traced()
    hit = Reply(200, b"{}", {"content-type": "application/json"}, source="cache")
    _, out = t.gateway(Stage("parse"), Stage("cache", reply=hit), Stage("lane"))
    assert out is hit
    spans = by_name(t.spans())
    assert set(spans) == {"sidegate.parse", "sidegate.cache", "chat gpt-4o-mini"}
    root = spans["chat gpt-4o-mini"]
    assert root.attributes["sidegate.cache"] == "hit" and root.attributes["sidegate.attempts"] == 0
    assert root.attributes["http.response.status_code"] == 200

    class Refuse(Stage):
        async def on_request(self, ctx: RequestContext) -> Reply | None:
            from sidegate.errors import GatewayError

            raise GatewayError(429, "slow down")

    t.exporter.clear()
    _, out = t.gateway(Stage("parse"), Refuse("quota"))
    assert isinstance(out, Reply) and out.status == 429
    spans = by_name(t.spans())
    assert set(spans) == {"sidegate.parse", "sidegate.quota", "chat gpt-4o-mini"}
    assert spans["chat gpt-4o-mini"].attributes["error.type"] == "429"
    t.close()


def test_every_lanes_completion_parents_under_the_root() -> None:
    """The direct lane's access log and the try lane hand over a Completion whose metadata is the
    gateway's: its try span and root come out the same, in whichever process reads it."""
    t = Traced()
    _, out = t.gateway(Stage("parse"))
    meta = {**orjson.loads(orjson.dumps(out.meta)), "lane": "direct"}  # as the access log carries it
    root_id = parse_traceparent(meta["traceparent"])[1]
    now = 1000.0
    t.feature.on_complete(Completion(meta=meta, provider="openai", upstream_model="gpt-4o-mini-2024-07-18", status=200,
                                     usage=Usage(9, 3, cached_tokens=4), final=True, streamed=False, attempt=1,
                                     started_at=now, first_byte_at=now + 0.1, ended_at=now + 0.2))  # fmt: skip
    tried, root = (next(s for s in t.spans() if s.kind is k) for k in (SpanKind.CLIENT, SpanKind.SERVER))
    assert tried.parent.span_id == root_id == root.context.span_id
    assert tried.attributes["gen_ai.usage.cache_read.input_tokens"] == 4
    assert root.attributes["sidegate.lane"] == "direct" and root.attributes["sidegate.fallback"] is False
    assert not [e for e in tried.events if e.name == "sidegate.first_token"]  # not streamed: no TTFT
    envoys_try = "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01"
    t.feature.on_complete(Completion(meta={**meta, "try_traceparent": envoys_try}, provider="openai", upstream_model="m",
                                     status=200, usage=None, final=False, streamed=False, attempt=1))  # fmt: skip
    linked = next(s for s in t.spans() if s.name == "chat m")
    assert linked.parent.span_id == root_id and [ln.context.span_id for ln in linked.links] == [
        0x1111111111111111
    ]
    t.feature.on_complete(Completion(meta={"model": "x"}, provider="openai", upstream_model="x", status=200, usage=None,
                                     final=True, streamed=False))  # fmt: skip
    assert len(t.spans()) == 4  # an untraced request's completion makes none
    t.close()

"""Trace context into Python (sidegate/core/traceparent.py and the adapters) without Envoy: only a
valid W3C traceparent is taken; Envoy's span of the call wins over the client's header; a try
notes Envoy's span of that try. What Envoy really sends is checked in tests/e2e/test_trace_envoy.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc.front import Front
from extproc.server import GatewayStream, UpstreamStream
from extproc.trylane import TryLane
from sidegate.core.context import Reply, RequestContext
from sidegate.core.pipeline import Gateway
from sidegate.core.traceparent import TRY_KEY, sampled, set_try_parent, valid_traceparent
from sidegate.core.tries import HeaderChanges
from sidegate.envoy_pb import struct
from sidegate.wire import FRONT_META_HEADER, META_NS, TryWire

CLIENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ENVOY = "00-4bf92f3577b34da6a3ce929d0e0e4736-7fa9dd774a69ce4a-01"
TRY = "00-4bf92f3577b34da6a3ce929d0e0e4736-0da92c1d97f897de-01"


@pytest.mark.parametrize(
    ("given", "taken"),
    [
        (CLIENT, CLIENT),
        (CLIENT.encode(), CLIENT),
        (" " + CLIENT + "\t", CLIENT),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ),
        # a later version: its first four fields, as version 00 (W3C: parse what version 00 defines)
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", CLIENT),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", CLIENT),
    ],
)
def test_a_valid_traceparent_is_taken(given, taken):
    assert valid_traceparent(given) == taken


@pytest.mark.parametrize(
    "bad",
    [
        None, "", "garbage", CLIENT + "-extra",  # version 00 has exactly four fields
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is invalid
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # uppercase hex
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nx-evil: 1",
        b"\xff\xfe",
    ],
)  # fmt: skip
def test_a_malformed_traceparent_is_ignored(bad):
    assert valid_traceparent(bad) == ""


def test_sampled_flag_and_try_parent():
    assert sampled(CLIENT) and not sampled(CLIENT[:-2] + "00") and not sampled("")
    meta: dict[str, Any] = {"traceparent": CLIENT}
    set_try_parent(meta, CLIENT)  # Envoy not tracing: the client's context travels on: nothing of the try's
    assert TRY_KEY not in meta
    set_try_parent(meta, "nonsense")
    assert TRY_KEY not in meta
    set_try_parent(meta, TRY.encode())
    assert meta[TRY_KEY] == TRY


class Seen:
    """A gateway stage that remembers the context it saw (and routes it)."""

    name = "seen"

    def __init__(self) -> None:
        self.ctx: RequestContext | None = None

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        self.ctx = ctx
        ctx.tenant, ctx.model, ctx.route = "acme", "m", "m"
        return None


def _headers(**extra: str) -> pb.HttpHeaders:
    hs = {":path": "/v1/chat/completions", ":method": "POST", "content-type": "application/json", **extra}
    return pb.HttpHeaders(
        headers=HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in hs.items()])
    )


def _gateway_ctx(stream_traceparent: str, **headers: str) -> RequestContext:
    seen = Seen()
    stream = GatewayStream(Gateway([seen]), stream_traceparent)
    asyncio.run(stream.handle(pb.ProcessingRequest(request_headers=_headers(**headers))))
    assert stream.ctx is not None
    return stream.ctx


def test_gateway_stream_takes_envoys_call_span_over_the_clients_header():
    assert _gateway_ctx(ENVOY, traceparent=CLIENT).traceparent == ENVOY
    assert _gateway_ctx("", traceparent=CLIENT).traceparent == CLIENT  # Envoy not tracing: the client's
    assert _gateway_ctx("").traceparent == ""
    assert _gateway_ctx("", traceparent="00-zz").traceparent == ""  # never a malformed one
    assert _gateway_ctx("bad", traceparent=CLIENT).traceparent == CLIENT
    ctx = _gateway_ctx(ENVOY)
    assert ctx.upstream_meta()["traceparent"] == ENVOY  # what the per-try stage gets


class StubTries:
    """The per-try stage's entry, recording the metadata each try started with."""

    cfg = SimpleNamespace(models={})

    def __init__(self) -> None:
        self.metas: list[dict[str, Any]] = []

    def ready(self, meta: dict[str, Any], cluster: str) -> bool:
        return True  # (live routing: it knows every provider and version)

    async def learn(self, meta: dict[str, Any]) -> None:
        return None

    def start_try(self, meta: dict[str, Any], cluster: str, attempt: int) -> Any:
        self.metas.append(meta)

        class Try:
            body_unchanged = False

            def request_headers(self, client: list[str]) -> HeaderChanges:
                return HeaderChanges()

            def close(self) -> None:
                pass

        return Try()


def _try_meta(meta: dict[str, Any], **headers: str) -> dict[str, Any]:
    tries = StubTries()
    req = pb.ProcessingRequest(request_headers=_headers(**headers))
    req.metadata_context.filter_metadata[META_NS].CopyFrom(struct(meta))
    asyncio.run(UpstreamStream(tries).handle(req))  # type: ignore[arg-type]
    return tries.metas[0]


def test_upstream_stream_notes_envoys_span_of_the_try():
    meta = _try_meta({"api": "openai", "traceparent": ENVOY}, traceparent=TRY)
    assert meta["traceparent"] == ENVOY and meta[TRY_KEY] == TRY
    # Envoy not tracing: the headers carry the client's context unchanged: no span of the try's own
    assert TRY_KEY not in _try_meta({"api": "openai", "traceparent": CLIENT}, traceparent=CLIENT)
    # an untraced request: the headers are not even looked at
    assert TRY_KEY not in _try_meta({"api": "openai"}, traceparent=TRY)
    assert TRY_KEY not in _try_meta({"api": "openai", "traceparent": ENVOY}, traceparent="00-bad")


def test_http_front_and_try_lane_take_envoys_call_span():
    seen = Seen()
    front = Front(Gateway([seen]), worker=0)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    headers = {"authorization": "Bearer k", "traceparent": ENVOY}
    asyncio.run(front.handle("POST", "/check/v1/chat/completions", headers, body))
    assert seen.ctx is not None and seen.ctx.traceparent == ENVOY
    asyncio.run(front.handle("POST", "/check/v1/chat/completions", {"traceparent": "x"}, body))
    assert seen.ctx.traceparent == ""

    tries = StubTries()
    lane = TryLane(tries, worker=0)  # type: ignore[arg-type]
    meta = orjson.dumps({"api": "openai", "model": "m", "traceparent": ENVOY}).decode()
    lane.request({FRONT_META_HEADER: meta, TryWire.CLUSTER: "c", "traceparent": TRY}, body)
    assert tries.metas[0][TRY_KEY] == TRY

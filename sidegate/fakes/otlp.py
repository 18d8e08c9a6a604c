"""An OTLP/gRPC trace receiver for tests, the bench and the docs, built on the official protos.

It is a real `opentelemetry.proto.collector.trace.v1.TraceService`: Envoy's OpenTelemetry tracer
and the SDK's OTLP exporter talk to it as to a Collector, which cannot be installed here. It keeps
every ResourceSpans it receives (bounded: the oldest go first, counted in `dropped`) and answers
"the spans of trace X", with waits for spans that are still on their way (both exporters batch).

In-process: ``async with OtlpReceiver() as r: ... r.endpoint``; from sync code:
``OtlpReceiverThread().start()``; as a process: ``python -m sidegate.fakes otlp --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from sidegate.fakes.thread import ServerThread

__all__ = ["OtlpReceiver", "OtlpReceiverThread", "ReceivedSpan"]

SPAN_KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "unspecified", Span.SPAN_KIND_INTERNAL: "internal", Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client", Span.SPAN_KIND_PRODUCER: "producer", Span.SPAN_KIND_CONSUMER: "consumer",
}  # fmt: skip


def any_value(v: AnyValue) -> Any:
    """An OTLP attribute value as plain Python (arrays and key-value lists too)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One received span, flattened for assertions (ids as lowercase hex, as in a traceparent)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    """Empty for a root span."""
    name: str
    kind: str
    service: str
    """The resource's `service.name`."""
    scope: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    status_code: int = 0
    """0 unset, 1 ok, 2 error (OTLP's Status.StatusCode)."""
    flags: int = 0
    resource: dict[str, Any] = field(default_factory=dict)


def flatten(rs: ResourceSpans) -> list[ReceivedSpan]:
    resource = _attrs(rs.resource.attributes)
    service = str(resource.get("service.name", ""))
    return [_span(s, ss.scope.name, service, resource) for ss in rs.scope_spans for s in ss.spans]


def _span(s: Span, scope: str, service: str, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(), parent_span_id=s.parent_span_id.hex(),
        name=s.name, kind=SPAN_KINDS.get(s.kind, str(s.kind)), service=service, scope=scope,
        start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano, attributes=_attrs(s.attributes),
        events=tuple((e.name, _attrs(e.attributes)) for e in s.events), status_code=s.status.code,
        flags=s.flags, resource=resource,
    )  # fmt: skip


class _Service(pb_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver):
        self.receiver = receiver

    async def Export(self, request: pb.ExportTraceServiceRequest, context: grpc.aio.ServicerContext) -> Any:
        if self.receiver.unavailable:  # a collector that is down (exporters must retry or drop, not block)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "receiver set unavailable")
        self.receiver.add(request, dict(context.invocation_metadata() or ()))
        return pb.ExportTraceServiceResponse()


class OtlpReceiver:
    """The receiver on `host:port` (0: a free port; `endpoint` says which). Its stores and queries
    are thread-safe, so a test thread may read while the receiver's loop writes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, max_spans: int = 100_000):
        self.host = host
        self.port = port
        self.max_spans = max_spans
        self.unavailable = False
        """When True every export is refused with UNAVAILABLE (as a collector that is down)."""
        self.exports = 0
        """Export calls answered (a batch each)."""
        self.dropped = 0
        """Spans forgotten to stay within max_spans."""
        self.last_metadata: dict[str, Any] = {}
        """The gRPC metadata of the last export."""
        self.user_agents: set[str] = set()
        """Who exported (Envoy's tracer says `OTel-OTLP-Exporter-Envoy/...`, the Python SDK
        `OTel-OTLP-Exporter-Python/...`); at most 64 kept."""
        self._resource_spans: collections.deque[ResourceSpans] = collections.deque()
        self._spans: collections.deque[ReceivedSpan] = collections.deque()
        self._cond = threading.Condition()
        self._server: grpc.aio.Server | None = None

    @property
    def endpoint(self) -> str:
        """`host:port`, what observability.tracing.endpoint takes."""
        return f"{self.host}:{self.port}"

    async def start(self) -> OtlpReceiver:
        self._server = grpc.aio.server()
        pb_grpc.add_TraceServiceServicer_to_server(_Service(self), self._server)
        self.port = self._server.add_insecure_port(f"{self.host}:{self.port}")
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None

    async def __aenter__(self) -> OtlpReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add(self, request: pb.ExportTraceServiceRequest, metadata: dict[str, Any] | None = None) -> None:
        with self._cond:
            self.exports += 1
            self.last_metadata = metadata or {}
            agent = self.last_metadata.get("user-agent")
            if isinstance(agent, str) and len(self.user_agents) < 64:
                self.user_agents.add(agent)
            for rs in request.resource_spans:
                spans = flatten(rs)
                self._resource_spans.append(rs)
                self._spans.extend(spans)
            while len(self._spans) > self.max_spans:
                self._spans.popleft()
                self.dropped += 1
            while len(self._resource_spans) > self.max_spans:
                self._resource_spans.popleft()
            self._cond.notify_all()

    def resource_spans(self) -> list[ResourceSpans]:
        """Every ResourceSpans kept, as received (oldest first)."""
        with self._cond:
            return list(self._resource_spans)

    def spans(self, trace_id: str | None = None, *, service: str | None = None) -> list[ReceivedSpan]:
        """The spans kept (oldest first), of one trace (hex id) and/or one service."""
        with self._cond:
            return [
                s
                for s in self._spans
                if (trace_id is None or s.trace_id == trace_id) and (service is None or s.service == service)
            ]

    def trace_ids(self) -> set[str]:
        with self._cond:
            return {s.trace_id for s in self._spans}

    def reset(self) -> None:
        with self._cond:
            self._resource_spans.clear()
            self._spans.clear()
            self.exports = self.dropped = 0
            self.unavailable = False
            self.user_agents.clear()

    def wait_spans(
        self,
        trace_id: str | None = None,
        *,
        count: int = 1,
        pred: Callable[[ReceivedSpan], bool] | None = None,
        timeout_s: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Block until at least `count` spans (of `trace_id`, matching `pred`) arrived; returns them
        all. TimeoutError (with what did arrive) if they do not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = [
                    s
                    for s in self._spans
                    if (trace_id is None or s.trace_id == trace_id) and (pred is None or pred(s))
                ]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        if len(found) < count:
            seen = sorted({(s.trace_id, s.name) for s in self.spans()})[:20]
            raise TimeoutError(
                f"{len(found)}/{count} spans of trace {trace_id or '*'} after {timeout_s}s; kept: {seen}"
            )
        return found

    async def wait_spans_async(self, trace_id: str | None = None, **kw: Any) -> list[ReceivedSpan]:
        """`wait_spans` from a coroutine (the wait runs in a thread: the receiver's own loop keeps serving)."""
        return await asyncio.to_thread(self.wait_spans, trace_id, **kw)

    def quiet(self, seconds: float) -> list[ReceivedSpan]:
        """Every span that arrives within `seconds` (to show that nothing does)."""
        time.sleep(seconds)
        return self.spans()


class OtlpReceiverThread(ServerThread):
    """An `OtlpReceiver` on its own event loop in a daemon thread, for synchronous tests:
    ``with OtlpReceiverThread() as r: ... r.endpoint, r.wait_spans(trace_id)``. The receiver's
    methods and attributes (endpoint, port, spans, wait_spans, trace_ids, reset, ...) are forwarded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.receiver = OtlpReceiver(*args, **kwargs)
        super().__init__(self.receiver, "OTLP receiver")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "unavailable":
            self.receiver.unavailable = value
        else:
            super().__setattr__(name, value)


async def _serve(args: argparse.Namespace) -> None:
    receiver = await OtlpReceiver(args.host, args.port, max_spans=args.max_spans).start()
    print(f"OTLP receiver listening on {receiver.endpoint}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    printed = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if args.print_spans:  # one line per span: enough to eyeball a trace in a demo
            spans = receiver.spans()
            for s in spans[printed:] if printed <= len(spans) else spans:
                ms = (s.end_ns - s.start_ns) / 1e6
                print(
                    f"{s.trace_id} {s.span_id} <- {s.parent_span_id or '-':16} {s.service}: {s.name} ({ms:.1f} ms)",
                    flush=True,
                )
            printed = len(spans)
    await receiver.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m sidegate.fakes otlp", description="An OTLP/gRPC trace receiver."
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4317, help="0: any free port")
    ap.add_argument("--max-spans", type=int, default=100_000, help="spans kept (the oldest go first)")
    ap.add_argument("--print-spans", action="store_true", help="print each span as it arrives")
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()

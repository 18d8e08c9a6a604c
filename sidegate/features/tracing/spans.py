"""Spans from recorded times: the SDK's TracerProvider with a span exporter behind a
BatchSpanProcessor (its own thread, batched, bounded queue), and ids Sidegate chose itself.

A request's root span is recorded last (at its final completion, maybe in another process than
its gateway stages), but its children name it as their parent from the start: the gateway picks
the root's span id, the children are parented under a NonRecordingSpan of that id, and the root is
created with it by :class:`ChosenIds` (the provider's IdGenerator, told the next id to hand out).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from sidegate.features.tracing.sampling import TraceIds

Attributes = Mapping[str, Any]
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class ChosenIds(RandomIdGenerator):
    """Random ids, except the next span (and trace) id when one was chosen: the root span's, which
    its children already name. Spans are only started on the event loop's thread, one at a time."""

    def __init__(self) -> None:
        self.span_id = 0
        self.trace_id = 0

    def generate_span_id(self) -> int:
        chosen, self.span_id = self.span_id, 0
        return chosen or super().generate_span_id()

    def generate_trace_id(self) -> int:
        chosen, self.trace_id = self.trace_id, 0
        return chosen or super().generate_trace_id()


def parent_context(trace_id: int, span_id: int) -> Context:
    """A context whose current span is the (sampled) span `span_id` of `trace_id`, recorded elsewhere."""
    sc = SpanContext(trace_id, span_id, is_remote=True, trace_flags=_SAMPLED)
    return trace.set_span_in_context(NonRecordingSpan(sc))


def wall_ns(monotonic_s: float, offset_ns: int) -> int:
    """A time.monotonic() instant as wall-clock nanoseconds (`offset_ns`: :func:`clock_offset`)."""
    return int(monotonic_s * 1e9) + offset_ns


def clock_offset() -> int:
    return time.time_ns() - time.monotonic_ns()


class SpanWriter:
    """Makes finished spans (start and end given) and hands them to the processor."""

    def __init__(
        self, service_name: str, processor: SpanProcessor | None = None, exporter: SpanExporter | None = None
    ):
        self.ids = ChosenIds()
        self.provider = TracerProvider(
            sampler=ALWAYS_ON,  # the gateway decided (sampling.py): every span made here is recorded
            resource=Resource.create({"service.name": service_name}),
            id_generator=self.ids,
            shutdown_on_exit=False,  # the feature's close flushes and shuts it down, bounded
        )
        if processor is None and exporter is not None:
            processor = BatchSpanProcessor(exporter)
        if processor is not None:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("sidegate")

    def root(
        self,
        ids: TraceIds,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: Attributes,
        error: bool = False,
    ) -> None:
        """The request's SERVER span, with the id its children already name."""
        ctx = parent_context(ids.trace_id, ids.parent_id) if ids.parent_id else Context()
        if not ids.parent_id:
            self.ids.trace_id = ids.trace_id
        self.ids.span_id = ids.root_id
        span = self.tracer.start_span(name, ctx, SpanKind.SERVER, attributes, start_time=start_ns)
        self.ids.span_id = self.ids.trace_id = (
            0  # in case the SDK asked for none (never left for another span)
        )
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_ns)

    def child(
        self, parent: Context, name: str, kind: SpanKind, start_ns: int, end_ns: int, attributes: Attributes,
        events: tuple[tuple[str, Attributes, int], ...] = (), error: bool = False, link: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        """A span under the request's root (`parent`: :func:`parent_context` of the root's id): a
        gateway stage, a provider try; `events`: (name, attributes, time in ns); `link`: (trace id,
        span id) of a span elsewhere in the trace this one relates to (Envoy's span of the try)."""
        links = (Link(SpanContext(link[0], link[1], is_remote=True, trace_flags=_SAMPLED)),) if link else ()
        span = self.tracer.start_span(name, parent, kind, attributes, links, start_time=start_ns)
        for event, attrs, at in events:
            span.add_event(event, attrs, at)
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_ns)

    def flush(self, timeout_s: float) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()

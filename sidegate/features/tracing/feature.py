"""tracing: one SERVER span per traced request, a child per gateway stage it went through and a
CLIENT child per provider try, with the GenAI semantic conventions, exported over OTLP/gRPC by the
SDK's BatchSpanProcessor (its own thread: the request path only records times).

Where each span is made (docs/observability.md, "Traces"):

- the gateway (:meth:`TracingFeature.trace`) decides sampling, picks the root's span id and puts
  it in the request's metadata (`traceparent`, rewritten to the root; `trace_root`, the root's own
  parent), which every lane carries to its tries and completions;
- when the gateway is done (:class:`GatewayTrace`), its stage spans are made from the recorded
  times; a request the gateway answered itself (refusal, cache hit) gets its root there too;
- each provider try's completion, on whichever lane and process it ends (the per-try stage, the
  try lane, the direct lane's access log), makes the try's span under the root named in its
  metadata (one tree on every lane), linked to Envoy's span of that try when Envoy traced it
  (`try_traceparent`); the final one also makes the root, which ends with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanKind

from sidegate.config import SidegateConfig
from sidegate.config.tracing import TracingConfig
from sidegate.core.completion import Completion, ttft_seconds
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature, TryHook
from sidegate.core.intake import METERED
from sidegate.core.traceparent import CONTENT_KEY, ROOT_KEY, TRY_KEY
from sidegate.errors import Api
from sidegate.features.tracing import names as n
from sidegate.features.tracing.content import ContentHook
from sidegate.features.tracing.sampling import Sampler, TraceIds, format_traceparent, parse_traceparent
from sidegate.features.tracing.spans import SpanWriter, clock_offset, parent_context, wall_ns

log = logging.getLogger("sidegate.tracing")

MAX_PENDING_CONTENT = 4096
"""Content hooks of tries not yet completed, at most (a try always completes; this bounds a leak)."""


class GatewayTrace:
    """A sampled request at the gateway: its ids and each request hook's (name, start, end)."""

    __slots__ = ("feature", "ids", "perf0", "start_ns", "steps", "undecided")

    def __init__(self, feature: TracingFeature, ids: TraceIds, undecided: RequestContext | None = None):
        self.feature = feature
        self.ids = ids
        self.start_ns = time.time_ns()
        self.perf0 = time.perf_counter()
        self.steps: list[tuple[str, float, float]] = []
        self.undecided = undecided
        """The request whose tenant was not known yet when it was sampled (inline auth names it in
        its request hook): whether its content is recorded is decided after the step that names
        it, before the lane step (a content tenant's request keeps off the direct lane)."""

    def step(self, name: str, started: float, ended: float) -> None:
        self.steps.append((name, started, ended))
        ctx = self.undecided
        if ctx is not None and ctx.tenant:
            self.undecided = None
            if self.feature.cfg.records_content(ctx.tenant):
                ctx.meta[CONTENT_KEY] = True

    def at_ns(self, perf: float) -> int:
        return self.start_ns + int((perf - self.perf0) * 1e9)

    def end(self, ctx: RequestContext, reply: Reply | None) -> None:
        """The spans are made after the gateway's answer has gone out (the next loop iteration),
        from what is read here (the request context moves on)."""
        answered = None
        if reply is not None:  # the gateway answered itself: the request (and its root) ends here
            answered = (ctx.upstream_meta(), reply.status, reply.source, time.time_ns())
        try:
            asyncio.get_running_loop().call_soon(self.feature.gateway_spans, self, answered)
        except RuntimeError:  # no event loop (unit tests of the pipeline alone): at once
            self.feature.gateway_spans(self, answered)


def _usage_attributes(c: Completion, attrs: dict[str, Any]) -> None:
    u = c.usage
    if u is None:
        return
    attrs[n.INPUT_TOKENS] = u.input_tokens
    attrs[n.OUTPUT_TOKENS] = u.output_tokens
    if u.cached_tokens:
        attrs[n.CACHE_READ_TOKENS] = u.cached_tokens
    if u.cache_creation_tokens:
        attrs[n.CACHE_WRITE_TOKENS] = u.cache_creation_tokens


def _ids(meta: dict[str, Any]) -> TraceIds | None:
    """The traced request's ids from its metadata (None: not traced by Sidegate)."""
    parent_hex = meta.get(ROOT_KEY)
    if parent_hex is None:
        return None
    root = parse_traceparent(str(meta.get("traceparent", "")))
    if root is None:
        return None
    try:
        parent_id = int(parent_hex, 16) if parent_hex else 0
    except (TypeError, ValueError):
        parent_id = 0
    return TraceIds(root[0], root[1], parent_id)


class TracingFeature(Feature):
    name = "tracing"
    endpoints = frozenset()
    """No request hook: the gateway asks `trace` itself, before the first hook."""

    def __init__(
        self,
        cfg: SidegateConfig,
        processor: SpanProcessor | None = None,
        exporter: SpanExporter | None = None,
    ):
        self.cfg: TracingConfig = cfg.observability.tracing
        self.providers = {name: n.provider_name(p) for name, p in cfg.providers.items()}
        self.servers = {
            name: {n.SERVER_ADDRESS: p.host, n.SERVER_PORT: p.port} for name, p in cfg.providers.items()
        }
        """Each provider's host and port (the semconv's server.address / server.port of its tries)."""
        self.sampler = Sampler(self.cfg.sample_ratio)
        self.writer: SpanWriter | None = None
        self._processor = processor
        self._exporter = exporter
        self._content: dict[int, tuple[dict[str, Any], ContentHook]] = {}
        """A content tenant's tries' hooks by their metadata's id (the metadata is held too, so the
        id is not reused while the entry lives)."""

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A routing change: new and changed providers' names and addresses (a removed provider's
        stay: its last tries may still end)."""
        self.providers = {**self.providers, **{name: n.provider_name(p) for name, p in cfg.providers.items()}}
        self.servers = {**self.servers, **{name: {n.SERVER_ADDRESS: p.host, n.SERVER_PORT: p.port}
                                           for name, p in cfg.providers.items()}}  # fmt: skip

    @classmethod
    def from_config(cls, cfg: SidegateConfig) -> TracingFeature | None:
        if not cfg.observability.tracing.enabled:
            return None
        return cls(cfg)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """The provider and its exporter thread, in the serving process (never before a fork)."""
        if self.writer is not None:
            return
        exporter = self._exporter
        if exporter is None and self._processor is None:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            assert self.cfg.endpoint is not None
            exporter = OTLPSpanExporter(endpoint=self.cfg.endpoint, insecure=True, timeout=self.cfg.timeout_s)
        self.writer = SpanWriter(self.cfg.service_name, self._processor, exporter)

    async def close(self) -> None:
        """Flush what is queued, then stop the exporter thread: bounded by the export timeout."""
        writer, self.writer = self.writer, None
        if writer is None:
            return
        bound = self.cfg.timeout_s + 1.0
        try:
            await asyncio.wait_for(asyncio.to_thread(self._shutdown, writer), bound)
        except TimeoutError:
            log.warning("tracing: spans still unexported after %.1f s at shutdown", bound)

    def _shutdown(self, writer: SpanWriter) -> None:
        if not writer.flush(self.cfg.timeout_s):
            log.warning("tracing: could not flush every span before shutdown")
        writer.shutdown()

    # -- the gateway ----------------------------------------------------------------------------
    def trace(self, ctx: RequestContext) -> GatewayTrace | None:
        if self.writer is None or ctx.endpoint not in METERED:
            return None
        ids = self.sampler.sample(ctx.traceparent)
        if ids is None:
            return None
        ctx.meta["traceparent"] = format_traceparent(ids.trace_id, ids.root_id)
        ctx.meta[ROOT_KEY] = f"{ids.parent_id:016x}" if ids.parent_id else ""
        if not self.cfg.content_tenants:
            return GatewayTrace(self, ids)
        if not ctx.tenant:  # inline auth: the tenant is named by a request hook (see GatewayTrace.step)
            return GatewayTrace(self, ids, undecided=ctx)
        if self.cfg.records_content(ctx.tenant):  # ext_authz named it before the gateway runs
            ctx.meta[CONTENT_KEY] = True
        return GatewayTrace(self, ids)

    def gateway_spans(self, t: GatewayTrace, answered: tuple[dict[str, Any], int, str, int] | None) -> None:
        """The stage spans of a request; its root too when the gateway answered it (`answered`:
        the request's metadata, the answer's status and source, the end)."""
        writer = self.writer
        if writer is None:
            return
        try:
            parent = parent_context(t.ids.trace_id, t.ids.root_id)
            for name, started, ended in t.steps:
                writer.child(parent, f"sidegate.{name}", SpanKind.INTERNAL, t.at_ns(started), t.at_ns(ended),
                             {n.STAGE: name})  # fmt: skip
            if answered is None:
                return
            meta, status, source, end = answered
            attrs = self._request_attributes(meta)
            attrs[n.HTTP_STATUS] = status
            attrs[n.ATTEMPTS] = 0
            if source == "cache":
                attrs[n.CACHE] = "hit"
            if status >= 400:
                attrs[n.ERROR_TYPE] = str(status)
            writer.root(t.ids, self._name(attrs), t.start_ns, end, attrs, error=status >= 500)
        except Exception:  # never break the loop's other work
            log.exception("tracing: gateway spans failed")

    def _name(self, attrs: dict[str, Any]) -> str:
        model = attrs.get(n.REQUEST_MODEL)
        return f"{attrs[n.OPERATION]} {model}" if model else str(attrs[n.OPERATION])

    def _request_attributes(self, meta: dict[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {n.OPERATION: n.operation(meta.get("endpoint"), meta.get("api"))}
        if meta.get("model"):
            attrs[n.REQUEST_MODEL] = str(meta["model"])
        if meta.get("stream"):
            attrs[n.REQUEST_STREAM] = True
        for key, attr in (("tenant", n.TENANT), ("request_id", n.REQUEST_ID), ("api", n.CLIENT_API),
                          ("cache", n.CACHE), ("lane", n.LANE)):  # fmt: skip
            value = meta.get(key)
            if value:
                attrs[attr] = str(value)
        return attrs

    # -- the tries ------------------------------------------------------------------------------
    def on_try(self, meta: dict[str, Any], api: Api) -> TryHook | None:
        if not meta.get(CONTENT_KEY) or ROOT_KEY not in meta:
            return None
        hook = ContentHook(api)
        if len(self._content) >= MAX_PENDING_CONTENT:
            self._content.pop(next(iter(self._content)))
        self._content[id(meta)] = (meta, hook)
        return hook

    def on_complete(self, c: Completion) -> None:
        if (
            ROOT_KEY not in c.meta or c.attempt == 0
        ):  # untraced, or the gateway's own answer (its root is made there)
            return
        try:
            self._completed(c)
        except Exception:  # never break the response path
            log.exception("tracing: try spans failed")

    def _completed(self, c: Completion) -> None:
        writer = self.writer
        ids = _ids(c.meta)
        if writer is None or ids is None:
            return
        meta = c.meta
        offset = clock_offset()
        start, end = wall_ns(c.started_at, offset), wall_ns(c.ended_at, offset)
        request = self._request_attributes(meta)
        attrs: dict[str, Any] = {n.OPERATION: request[n.OPERATION], n.PROVIDER: self.providers.get(c.provider, c.provider),
                                 n.SIDEGATE_PROVIDER: c.provider, n.ATTEMPT: c.attempt}  # fmt: skip
        attrs.update(self.servers.get(c.provider, ()))
        if c.upstream_model:
            attrs[n.REQUEST_MODEL] = c.upstream_model
        ok = 200 <= c.status < 300 and not c.aborted
        if c.status:
            attrs[n.HTTP_STATUS] = c.status
        error = self._error(c)
        if error:
            attrs[n.ERROR_TYPE] = error
        _usage_attributes(c, attrs)
        events: list[tuple[str, dict[str, Any], int]] = []
        ttft = ttft_seconds(c)
        if ttft is not None:
            attrs[n.TIME_TO_FIRST_CHUNK] = ttft
            events.append(
                (n.FIRST_TOKEN_EVENT, {n.TIME_TO_FIRST_CHUNK: ttft}, wall_ns(c.first_byte_at, offset))
            )
        response_model = c.upstream_model if ok else ""
        pending = self._content.pop(id(meta), None)
        if pending is not None:
            content, answer = pending[1].attributes(c.streamed, ok)
            if answer is not None:
                response_model = answer.model or response_model
                if answer.finish:
                    attrs[n.FINISH_REASONS] = (answer.finish,)
            if content:
                events.append((n.CONTENT_EVENT, content, end))
        if response_model:
            attrs[n.RESPONSE_MODEL] = response_model
        name = f"{attrs[n.OPERATION]} {c.upstream_model}" if c.upstream_model else str(attrs[n.OPERATION])
        parent = parent_context(ids.trace_id, ids.root_id)
        envoys = parse_traceparent(str(meta.get(TRY_KEY, ""))) if TRY_KEY in meta else None
        # Envoy not tracing, a try's headers carry the client's context: the root's parent, no link.
        link = (envoys[0], envoys[1]) if envoys is not None and envoys[1] != ids.parent_id else None
        writer.child(
            parent, name, SpanKind.CLIENT, start, end, attrs, tuple(events), error=bool(error), link=link
        )
        if c.final:
            self._root(writer, ids, c, request, attrs, end)

    def _root(self, writer: SpanWriter, ids: TraceIds, c: Completion, request: dict[str, Any], tried: dict[str, Any],
              end: int) -> None:  # fmt: skip
        """The request's span, ended with its final try."""
        attrs = request
        for key in (n.PROVIDER, n.SIDEGATE_PROVIDER, n.RESPONSE_MODEL, n.HTTP_STATUS, n.ERROR_TYPE, n.INPUT_TOKENS,
                    n.OUTPUT_TOKENS, n.CACHE_READ_TOKENS, n.CACHE_WRITE_TOKENS, n.FINISH_REASONS,
                    n.TIME_TO_FIRST_CHUNK):  # fmt: skip
            if key in tried:
                attrs[key] = tried[key]
        attrs[n.ATTEMPTS] = c.attempt
        attrs[n.FALLBACK] = c.attempt > 1
        received = c.meta.get("received_at")
        start = int(float(received) * 1e9) if isinstance(received, (int, float)) and received > 0 else end
        writer.root(ids, self._name(attrs), min(start, end), end, attrs, error=c.status >= 500 or c.aborted)

    @staticmethod
    def _error(c: Completion) -> str:
        """error.type: the HTTP status of a failed try (the semconv's example), `aborted` for a
        stream cut before its end."""
        if c.status >= 400 or (c.status and c.status < 200):
            return str(c.status)
        if c.aborted:
            return "aborted"
        if not c.status:
            return "no_response"
        return ""

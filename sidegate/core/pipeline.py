"""The gateway pipeline: runs the features' request hooks once per client request, in list order.

Pure of gRPC and HTTP: :meth:`Gateway.run` takes a :class:`RequestContext` and returns an
:class:`Outcome`, which the front (extproc/server.py or extproc/front.py) turns into its answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate import metrics
from sidegate.core.completion import notify, short_circuit
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Fillers, Hooks, collect
from sidegate.core.intake import COMPLETIONS, METERED, unknown_path
from sidegate.core.live import ROUTING_VERSION_KEY, Versions
from sidegate.errors import GatewayError, format_error
from sidegate.wire import CONFIG_VERSION_HEADER

log = logging.getLogger("sidegate.gateway")


@dataclass(slots=True)
class Forward:
    """Let the request go on to the router: route header, metadata, maybe a rewritten body."""

    route: str
    meta: dict[str, Any]
    body: bytes | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)


Outcome = Forward | Reply


class Gateway:
    def __init__(self, features: Sequence[object] = (), hooks: Hooks | None = None):
        hooks = hooks if hooks is not None else collect(features)
        self.header_hooks = hooks.on_headers
        self.steps = hooks.steps
        self.steps_by_endpoint = hooks.steps_by_endpoint or {COMPLETIONS: hooks.steps}
        self.steps_by_api = hooks.steps_by_api
        """Where some feature sees only some client APIs: the steps of each (endpoint, API)."""
        self.completion_hooks = hooks.on_complete
        """Every completion hook: also for the answers the gateway gives itself."""
        self.tracer = hooks.tracer
        """The tracing feature's: a RequestTrace for the requests it samples."""
        self.filler = Fillers(hooks.fills) if hooks.fills else None
        """A cache hit is an answer too: a fill the request asked for (a Responses answer to keep) gets it."""
        self.versions: Versions | None = None
        """The process's routing versions (live routing): a request naming one is routed with it."""

    def on_headers(self, ctx: RequestContext) -> Reply | None:
        """Runs at request-headers time (before the body is buffered): inline authentication."""
        for on_headers in self.header_hooks:
            reply = on_headers(ctx)
            if reply is not None:
                return reply
        return None

    async def run(self, ctx: RequestContext) -> Outcome:
        started = time.monotonic()
        if self.versions is not None:
            named = ctx.headers.get(CONFIG_VERSION_HEADER)
            if named is not None:
                await self._version(ctx, named)
        ctx.meta["received_at"] = time.time()
        # A sampled request's trace; None for every other request (one check per step).
        trace = self.tracer(ctx) if self.tracer is not None else None
        outcome: Outcome | None = None
        name, t0 = "", 0.0
        try:
            steps = self.steps_by_api.get((ctx.endpoint, ctx.api)) if self.steps_by_api else None
            if steps is None:
                steps = self.steps_by_endpoint.get(ctx.endpoint)
            if steps is None:  # a path of an endpoint no feature of this app serves
                outcome = unknown_path(ctx.path, ctx.headers)
            else:
                for name, on_request, prefetch_next in steps:
                    if prefetch_next is not None:
                        prefetch_next(ctx)
                    t0 = time.perf_counter()
                    reply = await on_request(ctx)
                    t1 = time.perf_counter()
                    metrics.observe_stage(name, t1 - t0)
                    if trace is not None:
                        trace.step(name, t0, t1)
                    if reply is not None:
                        if self.filler is not None and reply.status == 200 and ctx.endpoint == COMPLETIONS:
                            self._fill(ctx, reply)
                        self._observe(ctx, reply.status, reply.source, started)
                        outcome = reply
                        break
        except GatewayError as err:
            if trace is not None and t0:  # the step that refused the request
                trace.step(name, t0, time.perf_counter())
            headers = {"content-type": "application/json", **ctx.response_headers, **err.headers}
            self._observe(ctx, err.status, "gateway", started)
            outcome = Reply(err.status, format_error(ctx.api, err), headers)
        if outcome is None:
            if ctx.response_headers:
                ctx.meta["response_headers"] = ctx.response_headers
            body = orjson.dumps(ctx.body) if ctx.body_changed else None
            outcome = Forward(route=ctx.route or ctx.model, meta=ctx.upstream_meta(), body=body,
                              response_headers=ctx.response_headers, remove_headers=ctx.remove_headers)  # fmt: skip
        if trace is not None:
            trace.end(ctx, outcome if isinstance(outcome, Reply) else None)
        return outcome

    async def _version(self, ctx: RequestContext, named: str) -> None:
        """The routing version Envoy's route table named (contract 1, sidegate/core/live.py): its
        config for the features, its number for the per-try stage."""
        assert self.versions is not None
        try:
            n = int(named)
        except ValueError:
            return  # not Envoy's (it always sets a number): the latest
        cfg = self.versions.pick(n)
        ctx.config = cfg if cfg is not None else await self.versions.config_of(n)
        ctx.routing_version = n
        ctx.meta[ROUTING_VERSION_KEY] = n

    def _fill(self, ctx: RequestContext, reply: Reply) -> None:
        """Before the completion hooks: they let go of what the request held for its fill."""
        assert self.filler is not None
        streamed = reply.headers.get("content-type", "").startswith("text/event-stream")
        self.filler.fill(ctx.upstream_meta(), ctx.body, reply.body, streamed)

    def _observe(self, ctx: RequestContext, status: int, provider: str, started: float) -> None:
        """Answers the gateway gives itself to a completion (refusals, cache hits) reach the same
        completion hooks as a provider's. Endpoints that are not metered (the model list,
        count_tokens) are no completion: no metrics of one, no ledger record, nothing to settle."""
        if not self.completion_hooks or not ctx.tenant or ctx.endpoint not in METERED:
            return
        notify(self.completion_hooks, short_circuit(ctx.upstream_meta(), status, provider=provider, started_at=started,
                                             streamed=ctx.stream))  # fmt: skip

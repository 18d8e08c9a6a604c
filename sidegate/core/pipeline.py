"""The gateway pipeline: runs the stages once per client request (router-level ext_proc).

Pure of gRPC: :meth:`Gateway.run` takes a :class:`RequestContext` and returns an :class:`Outcome`,
which the servicer turns into Envoy messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate import metrics
from sidegate.core.completion import Observer, notify, short_circuit
from sidegate.core.context import Reply, RequestContext
from sidegate.core.stage import Stage, prefetchers
from sidegate.errors import GatewayError, format_error
from sidegate.features.auth.stage import AuthStage

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
    def __init__(self, stages: Sequence[Stage], observers: Sequence[Observer] = (), inline_auth: AuthStage | None = None):
        self.stages = list(stages)
        self.prefetch = prefetchers(self.stages)
        self.observers = list(observers)
        self.inline_auth = inline_auth

    def on_headers(self, ctx: RequestContext) -> Reply | None:
        """Runs at request-headers time (before the body is buffered): inline authentication."""
        if self.inline_auth is None:
            return None
        return self.inline_auth.authenticate(ctx)

    async def run(self, ctx: RequestContext) -> Outcome:
        started = time.monotonic()
        ctx.meta["received_at"] = time.time()
        try:
            for stage, prefetch_next in zip(self.stages, self.prefetch, strict=True):
                if prefetch_next is not None:
                    prefetch_next(ctx)
                t0 = time.perf_counter()
                reply = await stage.on_request(ctx)
                metrics.observe_stage(stage.name, time.perf_counter() - t0)
                if reply is not None:
                    self._observe(ctx, reply.status, reply.source, started)
                    return reply
        except GatewayError as err:
            headers = {"content-type": "application/json", **ctx.response_headers, **err.headers}
            self._observe(ctx, err.status, "gateway", started)
            return Reply(err.status, format_error(ctx.api, err), headers)
        if ctx.response_headers:
            ctx.meta["response_headers"] = ctx.response_headers
        body = orjson.dumps(ctx.body) if ctx.body_changed else None
        return Forward(route=ctx.route or ctx.model, meta=ctx.upstream_meta(), body=body,
                       response_headers=ctx.response_headers, remove_headers=ctx.remove_headers)  # fmt: skip

    def _observe(self, ctx: RequestContext, status: int, provider: str, started: float) -> None:
        """Answers the gateway gives itself (refusals, cache hits) reach the same observers."""
        if not self.observers or not ctx.tenant:
            return
        notify(self.observers, short_circuit(ctx.upstream_meta(), status, provider=provider, started_at=started,
                                             streamed=ctx.stream))  # fmt: skip

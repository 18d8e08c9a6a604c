"""lane: the last request hook; picks the direct lane when Envoy can serve every try alone.

Direct lane (see sidegate/bootstrap/render.py): the providers of the chain take the client's body as is,
so no per-try Python is needed; streams too, when the provider's stream carries the usage by
itself (Anthropic always, OpenAI when the client asked `stream_options.include_usage`): the stream
watch (sidegate/bootstrap/stream.py) reads it. Requests that need the per-try stage stay in the full lane: OpenAI
streams without include_usage (it is injected, and the extra chunk hidden), cache fills (the
response is kept), PII restore, traced requests of a tenant whose content is recorded (the try
keeps its body and answer). Responses requests go direct when every provider of the chain
serves the Responses API (sidegate/lanes.py, direct_apis), streams included (their
`response.completed` event carries the usage), unless the answer is to be stored
(`store_response`: the per-try stage keeps it).

Try lane (HTTP front only): a non-streaming request that needs the per-try stage gets it over HTTP
from a Lua upstream filter (extproc/trylane.py) instead of a gRPC ext_proc stream. Streams that
need it keep the gRPC per-try stage (the full lane): they are translated event by event.
"""

from __future__ import annotations

from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.core.intake import COMPLETIONS, EMBEDDINGS
from sidegate.core.traceparent import CONTENT_KEY
from sidegate.errors import Api
from sidegate.lanes import direct_apis
from sidegate.wire import DIRECT, LANE_DIRECT, LANE_TRY, TRY


class LaneFeature(Feature):
    name = "lane"
    endpoints = frozenset({COMPLETIONS, EMBEDDINGS})
    """Embeddings take the direct lane like a completion (Envoy relays `/v1/embeddings` as the client
    sent it and reads `usage.prompt_tokens` with the JSON usage rules); count_tokens stays in the
    full lane (its direct-lane access-log entry would be metered)."""

    def __init__(self, cfg: SidegateConfig):
        self.body_fixed = cfg.services.front == "http"
        """HTTP front: the body cannot be rewritten before the router (redaction happens per try)."""
        self.direct_lane = cfg.services.direct_lane
        self.reconfigure(cfg)

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """Which (model, chain start) take the direct lane for which client APIs, in `cfg` (the
        latest routing version: a request routed with another one asks :func:`direct_apis` itself)."""
        self.cfg = cfg
        direct: dict[tuple[str, int], frozenset[Api]] = {}
        if self.direct_lane:
            for model, m in cfg.models.items():
                for start in range(len(m.groups())):
                    apis = direct_apis(cfg, model, start)
                    if apis:
                        direct[(model, start)] = apis
        self.direct = direct

    def eligible(self, ctx: RequestContext) -> bool:
        meta = ctx.meta
        if meta.get("cache_fill") or meta.get("restore") or (self.body_fixed and ctx.body_changed):
            return False
        if meta.get(CONTENT_KEY):  # a content tenant's traced try records its body and answer
            return False
        if "?" in ctx.path:  # Envoy alone cannot drop a query string (the per-try stage sets `:path`)
            return False
        if ctx.stream and not (ctx.api is Api.ANTHROPIC or ctx.client_wants_usage):
            return False  # an OpenAI stream needs include_usage injected (and its usage chunk hidden)
        if meta.get("store_response"):
            return False  # the answer is kept by the per-try stage (stored responses)
        start = int(meta.get("start", 0))
        if ctx.config is not None and ctx.config is not self.cfg:  # routed with an older version: its routes
            return ctx.api in direct_apis(ctx.config, ctx.model, start)
        return ctx.api in self.direct.get((ctx.model, start), ())

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if not ctx.route:
            return None
        if self.direct_lane and self.eligible(ctx):
            ctx.route += DIRECT
            ctx.meta["lane"] = LANE_DIRECT
        elif self.body_fixed and not ctx.stream:
            ctx.route += TRY
            ctx.meta["lane"] = LANE_TRY
        return None

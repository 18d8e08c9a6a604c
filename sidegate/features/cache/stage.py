"""cache: answer repeated (exact) and near-repeated (semantic) questions without the provider.

A hit becomes a Reply (Envoy ImmediateResponse) in the client's format, JSON or an SSE replay.
A cacheable miss is marked in the metadata; the per-try upstream stage fills the cache when the
response completes (see :class:`CacheFiller`).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from sidegate import metrics
from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.errors import Api
from sidegate.features.cache import CacheRequest, ResponseCache, reassemble
from sidegate.ids import UniqueIds
from sidegate.translate.base import Usage
from sidegate.translate.usage import anthropic_usage, openai_usage
from sidegate.ttlmap import TtlMap

log = logging.getLogger("sidegate.cache")


class PendingFills(TtlMap[CacheRequest]):
    """CacheRequests of misses, so the fill reuses the lookup's keys and embedding when the upstream
    try runs in the same process (otherwise the request is rebuilt). Keyed by a key this process
    makes up (metadata `cache_fill`), never the request id: a client may send its own
    `x-request-id`, and two requests sharing one must not swap their cache entries."""

    def __init__(self, capacity: int = 4096, ttl_s: float = 600.0):
        super().__init__(capacity, ttl_s)
        self.new_key = UniqueIds()


class CacheStage:
    name = "cache"

    def __init__(self, cfg: SidegateConfig, cache: ResponseCache, pending: PendingFills):
        self.cfg = cfg
        self.cache = cache
        self.pending = pending

    def prefetch(self, ctx: RequestContext) -> None:
        """Send the exact lookup's GET now (it then travels with the quota reservation)."""
        policy = self.cfg.cache_policy(ctx.model)
        if policy.enabled and not ctx.body_changed:
            req = CacheRequest.from_body(ctx.api, ctx.tenant, ctx.model, ctx.body, ctx.headers)
            ctx.prefetched["cache"] = (req, self.cache.prefetch(req, policy))

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        policy = self.cfg.cache_policy(ctx.model)
        if not policy.enabled:
            return None
        if ctx.body_changed:  # e.g. PII redacted: answers hold per-request placeholders
            ctx.meta["cache"] = "skip"
            return None
        req, sent = ctx.prefetched.pop("cache", None) or (None, None)
        if req is None:
            req = CacheRequest.from_body(ctx.api, ctx.tenant, ctx.model, ctx.body, ctx.headers)
        hit = await self.cache.lookup(req, policy, sent)
        if hit is not None:
            result = hit.headers.get("x-sidegate-cache", "hit-exact").replace("-", "_")
            metrics.cache_lookup(result)
            ctx.meta["cache"] = result
            return Reply(200, hit.body, {"content-type": hit.content_type, **hit.headers, **ctx.response_headers}, "cache")
        ctx.meta["cache"] = "bypass" if not req.lookup_allowed else "error" if req.lookup_failed else "miss"
        metrics.cache_lookup(ctx.meta["cache"])
        if req.fill_allowed and not req.lookup_failed and req.allowed_by(policy):
            key = self.pending.new_key()
            ctx.meta["cache_fill"] = key
            self.pending.put(key, req)
        return None


class CacheFiller:
    """Upstream side: collects the client-format response of a cacheable miss and fills the cache."""

    def __init__(self, cfg: SidegateConfig, cache: ResponseCache, pending: PendingFills):
        self.cfg = cfg
        self.cache = cache
        self.pending = pending

    def fill(
        self, meta: dict[str, Any], client_body: dict[str, Any] | None, response: bytes, streamed: bool,
        usage: Usage | None = None,
    ) -> None:  # fmt: skip
        try:
            api = Api(meta.get("api", "openai"))
            model = str(meta.get("model", ""))
            policy = self.cfg.cache_policy(model)
            key = meta.get("cache_fill")
            req = self.pending.pop(key) if isinstance(key, str) else None
            if req is None:
                if client_body is None:
                    return
                req = CacheRequest.from_body(api, str(meta.get("tenant", "")), model, client_body, {})
            if streamed:
                doc = reassemble(api, response)
                if doc is None:
                    return
                if not doc.get("usage") and usage is not None:
                    # The client's stream may not have carried usage (not requested): use the provider's.
                    doc["usage"] = anthropic_usage(usage) if api is Api.ANTHROPIC else openai_usage(usage)
                response = orjson.dumps(doc)
            self.cache.fill_soon(req, response, policy)
        except Exception:  # never break the response path
            log.exception("cache fill failed")

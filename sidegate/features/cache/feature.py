"""cache: answer repeated (exact) and near-repeated (semantic) questions without the provider.

A hit becomes a Reply (Envoy ImmediateResponse) in the client's format, JSON or an SSE replay.
A cacheable miss is marked in the metadata (`cache_fill`); the per-try stage collects the answer
and hands it to :meth:`CacheFeature.fill` when the response completes. The feature also runs the
exact entries' local index (:mod:`.known`) and the semantic index (embedder + vector store).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from sidegate import metrics
from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature, close_each
from sidegate.core.intake import COMPLETIONS, EMBEDDINGS
from sidegate.errors import Api
from sidegate.features.cache import CachePolicy, CacheRequest, ResponseCache, SemanticIndex, reassemble
from sidegate.features.cache.core import CACHE_PREFIX
from sidegate.features.cache.known import KnownKeys
from sidegate.ids import UniqueIds
from sidegate.store import Store
from sidegate.translate.base import Usage
from sidegate.translate.codecs.responses.shapes import responses_usage
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


class CacheFeature(Feature):
    name = "cache"
    endpoints = frozenset({COMPLETIONS, EMBEDDINGS})

    def __init__(self, cfg: SidegateConfig, cache: ResponseCache, pending: PendingFills | None = None,
                 store: Store | None = None):  # fmt: skip
        self.cfg = cfg
        self.cache = cache
        self.pending = pending if pending is not None else PendingFills()
        self.store = store
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_config(cls, cfg: SidegateConfig, store: Store | None = None) -> CacheFeature | None:
        """On when a store is there and any model's policy (or the default) caches."""
        policies = [cfg.defaults.cache, *(m.cache for m in cfg.models.values() if m.cache is not None)]
        if store is None or not any(p.enabled for p in policies):
            return None
        semantic = SemanticIndex(cfg.semantic) if any(p.semantic for p in policies) else None
        cache = ResponseCache(store, semantic=semantic, known=known_keys(cfg, policies, store))
        return cls(cfg, cache, PendingFills(), store)

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A routing change: the cache policies (per model, the default) are the latest version's."""
        self.cfg = cfg

    async def start(self) -> None:
        """The key index tracks the store in the background; the semantic index is ready before
        serving (its model loads in ~1 s) or retried in the background."""
        if self.cache.known is not None and self.store is not None and self.store.tracked is not None:
            self.cache.known.start(self.store.tracked, self.store.redis)
        semantic = self.cache.semantic
        if semantic is not None:
            retry = await start_semantic(semantic)
            if retry is not None:
                self._tasks.append(retry)
            self._tasks.append(asyncio.create_task(semantic.run_cleanup()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        semantic, known = self.cache.semantic, self.cache.known
        await close_each(*([semantic.close] if semantic is not None else []), self.cache.drain,
                         *([known.close] if known is not None else []))  # fmt: skip

    def prefetch(self, ctx: RequestContext) -> None:
        """Send the exact lookup's GET now (it then travels with the quota reservation)."""
        policy = self.cfg.cache_policy(ctx.model)
        if policy.enabled and not ctx.meta.get("restore"):
            req = CacheRequest.from_body(ctx.api, ctx.tenant, ctx.model, ctx.body, ctx.headers, ctx.endpoint, ctx.stream)
            ctx.prefetched["cache"] = (req, self.cache.prefetch(req, policy))

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        policy = self.cfg.cache_policy(ctx.model)
        if not policy.enabled:
            return None
        if ctx.meta.get("restore"):
            # PII redacted and to be restored: the answer the client gets holds this caller's own
            # values, which another caller whose request redacts the same must never be served.
            # Other body changes keep the cache: a body redacted without restore is answered with
            # its placeholders whoever sent it, and a Responses conversation expanded from
            # `previous_response_id` is keyed on the whole conversation.
            ctx.meta["cache"] = "skip"
            return None
        req, sent = ctx.prefetched.pop("cache", None) or (None, None)
        if req is None:
            req = CacheRequest.from_body(ctx.api, ctx.tenant, ctx.model, ctx.body, ctx.headers, ctx.endpoint, ctx.stream)
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
                endpoint = str(meta.get("endpoint") or COMPLETIONS)
                req = CacheRequest.from_body(api, str(meta.get("tenant", "")), model, client_body, {}, endpoint)
            if streamed:
                doc = reassemble(api, response)
                if doc is None:
                    return
                # (a Gemini stream's chunks carry usageMetadata, the reassembled answer has it)
                if api is not Api.GEMINI and not doc.get("usage") and usage is not None:
                    # The client's stream may not have carried usage (not requested): use the provider's.
                    doc["usage"] = (
                        anthropic_usage(usage) if api is Api.ANTHROPIC
                        else responses_usage(usage) if api is Api.RESPONSES
                        else openai_usage(usage)
                    )  # fmt: skip
                response = orjson.dumps(doc)
            self.cache.fill_soon(req, response, policy)
        except Exception:  # never break the response path
            log.exception("cache fill failed")


async def start_semantic(semantic: Any, timeout_s: float = 5.0, retry_s: float = 30.0) -> asyncio.Task[None] | None:
    """Load the embedder and open the vector store before serving (~1 s). If that fails or hangs
    (e.g. Qdrant down), serve anyway, uncached, and keep retrying in the background (the task)."""
    try:
        await asyncio.wait_for(semantic.start(), timeout_s)
        return None
    except Exception as exc:
        log.warning("semantic cache not ready (%s): requests proceed uncached; retrying every %.0fs",
                    type(exc).__name__, retry_s)  # fmt: skip

    async def retry() -> None:
        while not semantic.ready:
            await asyncio.sleep(retry_s)
            try:
                await asyncio.wait_for(semantic.start(), timeout_s)
            except Exception:
                continue
        log.info("semantic cache ready")

    return asyncio.create_task(retry())


def known_keys(cfg: SidegateConfig, policies: list[CachePolicy], store: Store) -> KnownKeys | None:
    """The local index of the store's exact-cache entries (on a store client with a tracked
    connection: the lean one, on a plain `redis://` URL)."""
    if not (any(p.exact for p in policies) and cfg.store.cache_index):
        return None
    if store.tracked is None:
        # A store cluster (or redis-py's pool) has no one connection that sees every key's
        # invalidations: the index would miss entries other nodes hold, so it is not built.
        log.info("cache: local key index off (store.cache_index needs one tracked connection; this store client has none)")
        return None
    # Entries are kept as long as the longest TTL of any fill (a semantic match is read by its exact
    # key too); every process sharing the store should have the same cache TTLs (docs/cache.md).
    keep_s = max(p.ttl_s for p in policies if p.enabled)
    return KnownKeys(CACHE_PREFIX, keep_s, cfg.store.cache_index_max_keys)

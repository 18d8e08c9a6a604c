"""The response cache: exact lookup in the Redis-protocol store, then semantic lookup; async fill.

Nothing here raises into the request path: store or index failures, slowness past the policy's
bounds and unreadable values all count in :class:`CacheStats` and behave as a miss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.config.cache import CachePolicy
from sidegate.core.intake import COMPLETIONS
from sidegate.store import Store

from . import codec
from .cacheable import embeddings_refusal, refusal_reason
from .index import SemanticIndex
from .known import KnownKeys
from .replay import replay_answer
from .request import CacheRequest
from .stats import CacheStats

__all__ = ["CacheHit", "ResponseCache"]

log = logging.getLogger(__name__)


@dataclass
class CacheHit:
    """A response to send instead of calling the provider."""

    kind: str
    """"exact" or "semantic"."""
    body: bytes
    """Rendered for the client: JSON, or a whole SSE stream when it asked to stream."""
    content_type: str
    response: dict[str, Any]
    """The stored canonical non-streaming response (usage as the provider reported it)."""
    similarity: float = 1.0
    age_s: float = 0.0
    provider_tokens_used: bool = False
    """Always False: a hit costs no provider tokens (the replayed usage is informational)."""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def usage(self) -> dict[str, Any] | None:
        u = self.response.get("usage")
        return u if isinstance(u, dict) else None


CACHE_PREFIX = "sgc:v1:"
"""Every cache entry's store key starts with it (the key index tracks this prefix)."""
FILL_TIMEOUT_S = 1.0
"""A fill's store write may take this long (then it is dropped and counted as a fill error)."""


class ResponseCache:
    def __init__(
        self,
        store: Store,
        *,
        semantic: SemanticIndex | None = None,
        prefix: str = CACHE_PREFIX,
        stats: CacheStats | None = None,
        known: KnownKeys | None = None,
    ) -> None:
        self.store = store
        self.semantic = semantic
        self.prefix = prefix
        self.stats = stats or (semantic.stats if semantic is not None else CacheStats())
        if semantic is not None:
            semantic.stats = self.stats
        self.known = known
        """The entries the store may hold (None: every exact lookup asks the store)."""
        self._tasks: set[asyncio.Task[Any]] = set()

    def _key(self, exact_key: str) -> str:
        return self.prefix + exact_key

    def prefetch(self, req: CacheRequest, policy: CachePolicy) -> asyncio.Future[Any] | None:
        """The exact lookup's GET, sent now (when a lookup will run and the store client can send
        now: the lean one, connected); :meth:`lookup` then awaits it instead of sending its own.

        When the exact lookup certainly misses (the key index lacks the key, or the route is
        semantic only), the semantic search starts now instead (`req.search`), so the model runs
        while the stages before the lookup do. Not when an exact hit is possible: that hit would
        have run the model for nothing."""
        if not (req.allowed_by(policy) and req.lookup_allowed):
            return None
        if policy.exact:
            key = self._key(req.exact_key)
            if self.known is None or self.known.may_exist(key):
                return self.store.send_now("GET", key, timeout_s=policy.exact_timeout_ms / 1000)
        if policy.semantic and self.semantic is not None and req.query_text is not None:
            req.search = self.semantic.begin_search(
                req.scope, req.query_text, threshold=req.threshold(policy, self.semantic.threshold), max_tokens=policy.semantic_max_tokens
            )
        return None

    async def _get(
        self, exact_key: str, timeout_s: float, req: CacheRequest | None = None, sent: asyncio.Future[Any] | None = None,
    ) -> tuple[dict[str, Any], float] | None:  # fmt: skip
        key = self._key(exact_key)
        try:
            if sent is not None:
                value = await sent
            elif self.known is not None and not self.known.may_exist(key):
                return None  # the store certainly lacks it: a miss without a round trip
            else:
                value = await self.store.command("GET", key, timeout_s=timeout_s)
        except Exception as exc:  # timeout, connection, protocol
            if req is not None:
                req.lookup_failed = True
            self.stats.incr("store_errors")
            log.debug("cache store get failed: %s", type(exc).__name__)
            return None
        if value is None:
            if self.known is not None:
                self.known.discard(key)
            return None
        try:
            raw, stored_at = codec.decode(value)
            resp = orjson.loads(raw)
            if not isinstance(resp, dict):
                raise ValueError("not an object")
        except (ValueError, orjson.JSONDecodeError):
            self.stats.incr("store_errors")
            return None
        return resp, stored_at

    def _hit(
        self, req: CacheRequest, kind: str, resp: dict[str, Any], stored_at: float, sim: float
    ) -> CacheHit:
        if req.endpoint == COMPLETIONS:
            body, ctype = replay_answer(req.api, resp, stream=req.stream, include_usage=req.include_usage,
                                        echo=req.echo)  # fmt: skip
        else:  # embeddings carry no id or timestamp to renew: the stored answer as it came
            body, ctype = orjson.dumps(resp), "application/json"
        age = max(0.0, time.time() - stored_at)
        headers = {"x-sidegate-cache": f"hit-{kind}", "age": str(int(age))}
        if kind == "semantic":
            headers["x-sidegate-cache-similarity"] = f"{sim:.4f}"
        self.stats.incr("hits_exact" if kind == "exact" else "hits_semantic")
        return CacheHit(kind, body, ctype, resp, sim, age, False, headers)

    async def lookup(self, req: CacheRequest, policy: CachePolicy, sent: asyncio.Future[Any] | None = None) -> CacheHit | None:
        """Exact, then semantic. Returns None on a miss, a bypass, or any failure (bounded by the
        policy). `sent`: the exact GET from :meth:`prefetch`."""
        if not req.allowed_by(policy):
            return None
        self.stats.incr("lookups")
        if not req.lookup_allowed:
            self.stats.incr("bypassed")
            return None
        try:
            if policy.exact:
                got = await self._get(req.exact_key, policy.exact_timeout_ms / 1000, req, sent)
                if got is not None:
                    return self._hit(req, "exact", got[0], got[1], 1.0)
            if policy.semantic and self.semantic is not None and req.query_text is not None:
                hit = await self._semantic_lookup(req, policy)
                if hit is not None:
                    return hit
        except Exception as exc:  # defensive: the request path must never see a cache bug
            req.lookup_failed = True
            self.stats.incr("store_errors")
            log.warning("cache lookup failed: %s", type(exc).__name__)
        self.stats.incr("misses")
        return None

    async def _semantic_lookup(self, req: CacheRequest, policy: CachePolicy) -> CacheHit | None:
        assert self.semantic is not None and req.query_text is not None
        start = time.monotonic()
        budget = policy.semantic_timeout_ms / 1000
        vec, match = await self.semantic.search(
            req.scope, req.query_text, threshold=req.threshold(policy, self.semantic.threshold), timeout_s=budget,
            max_tokens=policy.semantic_max_tokens, vector=req.vector, started=req.search,
        )  # fmt: skip
        req.search = None
        req.vector = vec
        if match is None:
            return None
        remaining = budget - (time.monotonic() - start)
        got = await self._get(match.key, max(remaining, policy.exact_timeout_ms / 1000))
        if got is None:
            self.stats.incr("semantic_dangling")
            return None
        return self._hit(req, "semantic", got[0], got[1], match.score)

    async def fill(self, req: CacheRequest, response_json: bytes, policy: CachePolicy) -> bool:
        """Store a complete client-format non-streaming response. Never raises; True when stored."""
        try:
            return await self._fill(req, response_json, policy)
        except Exception as exc:
            self.stats.incr("fill_errors")
            log.warning("cache fill failed: %s", type(exc).__name__)
            return False

    async def _fill(self, req: CacheRequest, response_json: bytes, policy: CachePolicy) -> bool:
        if not req.allowed_by(policy):
            self.stats.skip("policy")
            return False
        if not req.fill_allowed:
            self.stats.skip("no_store")
            return False
        if len(response_json) > policy.max_entry_bytes:
            self.stats.skip("too_big")
            return False
        try:
            resp = orjson.loads(response_json)
        except orjson.JSONDecodeError:
            self.stats.skip("not_json")
            return False
        reason = refusal_reason(req.api, resp, policy) if req.endpoint == COMPLETIONS else embeddings_refusal(resp)
        if reason is not None:
            self.stats.skip(reason.split(":")[0])
            return False
        now = time.time()
        value = codec.encode(response_json, now)
        key = self._key(req.exact_key)
        if self.known is not None:
            self.known.add(key)  # before the write leaves: a lookup meanwhile asks the store
        await self.store.command("SET", key, value, "EX", policy.ttl_s, timeout_s=FILL_TIMEOUT_S, lazy=True)
        self.stats.incr("fills")
        if policy.semantic and self.semantic is not None and req.query_text is not None:
            await self.semantic.add(
                req.scope, req.exact_key, req.query_text, expires_at=now + policy.ttl_s, vector=req.vector,
                max_tokens=policy.semantic_max_tokens,
            )  # fmt: skip
        return True

    def fill_soon(self, req: CacheRequest, response_json: bytes, policy: CachePolicy) -> None:
        """Fire-and-forget :meth:`fill` (the task is kept referenced until it ends)."""
        task = asyncio.get_running_loop().create_task(self.fill(req, response_json, policy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for background fills, e.g. at shutdown or in tests."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

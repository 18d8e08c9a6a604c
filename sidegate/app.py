"""The gateway as one process runs it: the stages in order, the per-try stage and their background
work, built from the config. The adapters (extproc/) serve it over gRPC, HTTP and the access log.

Gateway (once per request):  auth -> parse -> route -> guard -> quota -> cache -> lane
Upstream (once per try):     translate -> credentials -> (response) translate -> observe
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sidegate.config import SidegateConfig
from sidegate.core.completion import Observer
from sidegate.core.pipeline import Gateway
from sidegate.core.stage import Stage
from sidegate.features.auth.keycache import KeyCache
from sidegate.features.auth.stage import AuthStage
from sidegate.features.auth.throttle import FailureThrottle
from sidegate.features.cache.stage import CacheFiller, CacheStage, PendingFills
from sidegate.features.guard.stage import GuardStage
from sidegate.features.lane import LaneStage
from sidegate.features.metrics import MetricsObserver
from sidegate.features.parse import ParseStage
from sidegate.features.quota import QuotaStore
from sidegate.features.quota.lease import LeasedQuota
from sidegate.features.quota.stage import QuotaSettler, QuotaStage
from sidegate.features.quota.tenants import TenantQuotas
from sidegate.features.route.breaker import Breaker, BreakerObserver
from sidegate.features.route.stage import RouteStage
from sidegate.features.upstream import Upstream
from sidegate.store import Store

if TYPE_CHECKING:
    from sidegate.features.cache import CachePolicy
    from sidegate.features.cache.known import KnownKeys

log = logging.getLogger("sidegate.extproc")


@dataclass
class App:
    """Everything one extproc process runs, with its background tasks."""

    cfg: SidegateConfig
    gateway: Gateway
    upstream: Upstream
    starters: list[Callable[[], Any]] = field(default_factory=list)
    """Run on the serving event loop by :meth:`start` (they may create tasks)."""
    closers: list[Callable[[], Any]] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self) -> None:
        for starter in self.starters:
            result = starter()
            if asyncio.iscoroutine(result):
                result = await result
            if isinstance(result, asyncio.Task):
                self.tasks.append(result)

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        for closer in reversed(self.closers):
            try:
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("shutdown step failed")


async def start_semantic(semantic: Any, timeout_s: float = 5.0, retry_s: float = 30.0) -> asyncio.Task[None] | None:
    """Load the embedder and open the vector store before serving (~1 s). If that fails or hangs
    (e.g. Qdrant down), serve anyway, uncached, and keep retrying in the background."""
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


def build(cfg: SidegateConfig, store: Store | None = None) -> App:
    """Stages and observers from the config. Background work starts in :func:`start`."""
    redis = store.redis if store is not None else None  # the richer API: key records, tenants
    observers: list[Observer] = []
    starters: list[Callable[[], Any]] = []
    closers: list[Callable[[], Any]] = []
    breaker = Breaker()
    inline_auth = None
    if cfg.services.auth == "inline":
        if redis is None:
            raise ValueError("services.auth: inline needs the store (key records)")
        keys = KeyCache(redis)
        inline_auth = AuthStage(keys, FailureThrottle.from_config(cfg.services))
        starters.append(keys.start)
        closers.append(keys.stop)
    stages: list[Stage] = [
        inline_auth or AuthStage(), ParseStage(cfg.listener.max_request_bytes), RouteStage(cfg, breaker), GuardStage(cfg),
    ]  # fmt: skip
    filler = None
    cost = None
    if store is not None:
        quota_store: QuotaStore | LeasedQuota = QuotaStore.from_policy(store, cfg.quota, fail_mode=cfg.store.fail_mode)
        if cfg.quota.lease.enabled:
            quota_store = LeasedQuota(quota_store, cfg.quota.lease)
        tenants = TenantQuotas(cfg, store.redis)
        stages.append(QuotaStage(cfg, quota_store, tenants))
        settler = QuotaSettler(cfg, quota_store)
        cost = settler.cost
        observers.append(settler)
        starters.append(lambda: asyncio.create_task(tenants.run()))
        if isinstance(quota_store, LeasedQuota):
            closers.append(quota_store.close)  # closers run in reverse: after the settler's drain
        closers.append(settler.drain)
        if cfg.observability.ledger:
            from sidegate.features.ledger.ledger import Ledger

            ledger = Ledger(store, maxlen=cfg.observability.ledger_maxlen)
            observers.append(ledger.observer(cost=cost))
            starters.append(ledger.start)
            closers.append(ledger.stop)
        policies = [cfg.defaults.cache, *(m.cache for m in cfg.models.values() if m.cache is not None)]
        if any(p.enabled for p in policies):
            from sidegate.features.cache import ResponseCache, SemanticIndex

            semantic = SemanticIndex(cfg.semantic) if any(p.semantic for p in policies) else None
            cache = ResponseCache(store, semantic=semantic, known=_known_keys(cfg, policies, store))
            if cache.known is not None and store.tracked is not None:
                known, tracked, scan = cache.known, store.tracked, store.redis
                starters.append(lambda: known.start(tracked, scan))
                closers.append(known.close)
            pending = PendingFills()
            stages.append(CacheStage(cfg, cache, pending))
            filler = CacheFiller(cfg, cache, pending)
            closers.append(cache.drain)
            if semantic is not None:
                starters.append(lambda: start_semantic(semantic))  # model loaded before reporting ready
                starters.append(lambda: asyncio.create_task(semantic.run_cleanup()))
                closers.append(semantic.close)
    stages.append(LaneStage(cfg))
    observers.insert(0, MetricsObserver(cfg, cost=cost))
    observers.append(BreakerObserver(cfg, breaker))
    gateway = Gateway(stages, observers, inline_auth)
    return App(cfg, gateway, Upstream(cfg, observers, filler), starters, closers)


def _known_keys(cfg: SidegateConfig, policies: list[CachePolicy], store: Store) -> KnownKeys | None:
    """The local index of the store's exact-cache entries (on a store client with a tracked
    connection: the lean one, on a plain `redis://` URL)."""
    from sidegate.features.cache.core import CACHE_PREFIX
    from sidegate.features.cache.known import KnownKeys

    if not (any(p.exact for p in policies) and cfg.store.cache_index and store.tracked is not None):
        return None
    # Entries are kept as long as the longest TTL of any fill (a semantic match is read by its exact
    # key too); every process sharing the store should have the same cache TTLs (docs/cache.md).
    keep_s = max(p.ttl_s for p in policies if p.enabled)
    return KnownKeys(CACHE_PREFIX, keep_s, cfg.store.cache_index_max_keys)

"""Assembles the pipeline from the config: the one place that lists the stages in order.

Gateway (once per request):  auth -> parse -> route -> guard -> quota -> cache -> lane
Upstream (once per try):     translate -> credentials -> (response) translate -> observe
Direct lane (Envoy alone per try; see render.py): observe from the access log (extproc/direct.py)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from redis.asyncio import Redis

from authz.service import KeyCache
from authz.throttle import FailureThrottle
from extproc.breaker import Breaker, BreakerObserver
from extproc.direct import DirectLaneObserver
from extproc.front import Front, FrontServer
from extproc.gateway import Gateway
from extproc.server import ExternalProcessor
from extproc.stages import Stage
from extproc.stages.auth import AuthStage
from extproc.stages.cache import CacheFiller, CacheStage, PendingFills
from extproc.stages.guard import GuardStage
from extproc.stages.lane import LaneStage
from extproc.stages.parse import ParseStage
from extproc.stages.quota import QuotaSettler, QuotaStage
from extproc.stages.route import RouteStage
from extproc.tenants import TenantQuotas
from extproc.trylane import TryLane
from extproc.upstream import Observer, Upstream
from sidegate import metrics
from sidegate.config import SidegateConfig, local_address
from sidegate.health import add_health, set_serving
from sidegate.observe import MetricsObserver
from sidegate.quota import QuotaStore
from sidegate.quota.lease import LeasedQuota
from sidegate.render_buffers import grpc_max_message
from sidegate.resp import FastRedis
from sidegate.trust import Token

if TYPE_CHECKING:
    from sidegate.cache import CachePolicy
    from sidegate.cache.known import KnownKeys

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
    processor: ExternalProcessor | None = None
    direct: DirectLaneObserver | None = None
    front: FrontServer | None = None

    async def start(self) -> None:
        for starter in self.starters:
            result = starter()
            if asyncio.iscoroutine(result):
                result = await result
            if isinstance(result, asyncio.Task):
                self.tasks.append(result)

    async def stop_serving(self, server: grpc.aio.Server, grace_s: float) -> None:
        """Graceful stop: in-flight ext_proc streams (e.g. a long SSE response) may finish within
        the grace period; the access-log streams (which never end by themselves) are closed once
        they are the only RPCs left and Envoy had time to flush its last batch."""
        if self.front is not None:
            await self.front.close(grace_s)
        stopping = asyncio.ensure_future(server.stop(grace=grace_s))
        while not stopping.done():
            if self.processor is None or self.processor.active == 0:
                await asyncio.sleep(0.2)  # Envoy flushes the access log every 50 ms
                if self.direct is not None:
                    self.direct.close()
                break
            await asyncio.sleep(0.05)
        await stopping

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


def build(cfg: SidegateConfig, redis: Redis | None = None, hot: Any = None) -> App:
    """Stages and observers from the config. Background work starts in :func:`start`."""
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
    if redis is not None:
        quota_store: QuotaStore | LeasedQuota = QuotaStore.from_policy(
            redis, cfg.quota, fail_mode=cfg.store.fail_mode, hot=hot
        )
        if cfg.quota.lease.enabled:
            quota_store = LeasedQuota(quota_store, cfg.quota.lease)
        tenants = TenantQuotas(cfg, redis)
        stages.append(QuotaStage(cfg, quota_store, tenants))
        settler = QuotaSettler(cfg, quota_store)
        cost = settler.cost
        observers.append(settler)
        starters.append(lambda: asyncio.create_task(tenants.run()))
        if isinstance(quota_store, LeasedQuota):
            closers.append(quota_store.close)  # closers run in reverse: after the settler's drain
        closers.append(settler.drain)
        if cfg.observability.ledger:
            from sidegate.ledger import Ledger

            ledger = Ledger(redis, maxlen=cfg.observability.ledger_maxlen, hot=hot)
            observers.append(ledger.observer(cost=cost))
            starters.append(ledger.start)
            closers.append(ledger.stop)
        policies = [cfg.defaults.cache, *(m.cache for m in cfg.models.values() if m.cache is not None)]
        if any(p.enabled for p in policies):
            from sidegate.cache import ResponseCache, SemanticIndex

            semantic = SemanticIndex(cfg.semantic) if any(p.semantic for p in policies) else None
            cache = ResponseCache(redis, semantic=semantic, hot=hot, known=_known_keys(cfg, policies, hot))
            if cache.known is not None:
                known, fast = cache.known, hot
                starters.append(lambda: known.start(fast, redis))
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


def _known_keys(cfg: SidegateConfig, policies: list[CachePolicy], hot: Any) -> KnownKeys | None:
    """The local index of the store's exact-cache entries (on a plain `redis://` store)."""
    from sidegate.cache.core import CACHE_PREFIX
    from sidegate.cache.known import KnownKeys

    if not (any(p.exact for p in policies) and cfg.store.cache_index and isinstance(hot, FastRedis)):
        return None
    # Entries are kept as long as the longest TTL of any fill (a semantic match is read by its exact
    # key too); every process sharing the store should have the same cache TTLs (docs/cache.md).
    keep_s = max(p.ttl_s for p in policies if p.enabled)
    return KnownKeys(CACHE_PREFIX, keep_s, cfg.store.cache_index_max_keys)


async def serve(
    cfg: SidegateConfig, redis: Redis | None, host: str, port: int, token: Token, hot: Any = None
) -> tuple[grpc.aio.Server, App]:
    app = build(cfg, redis, hot)
    await app.start()
    if cfg.services.metrics_port:
        metrics.start_metrics_server(metrics.service_metrics_port(cfg, "extproc"), cfg.services.metrics_host)
    # A buffered provider answer reaches the per-try stage as one message (up to max_response_bytes).
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", grpc_max_message(cfg))])
    app.processor = ExternalProcessor(app.gateway, app.upstream, token)
    worker = int(os.environ.get("SIDEGATE_EXTPROC_WORKER", "0"))
    trylane = TryLane(app.upstream, worker, local_address(host), cfg.services.front_port, token.value) if cfg.services.front == "http" else None
    if trylane is not None:
        trylane.start()
    app.direct = DirectLaneObserver(app.upstream.observers, token, trylane.abandon if trylane is not None else None)
    pb_grpc.add_ExternalProcessorServicer_to_server(app.processor, server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(app.direct, server)
    health = add_health(server)
    if cfg.services.front == "http":  # listening before the gRPC port (what readiness waits for)
        app.front = FrontServer(Front(app.gateway, worker, trylane), token)
        await app.front.start(host, cfg.services.front_port)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await set_serving(health, "envoy.service.ext_proc.v3.ExternalProcessor")
    return server, app

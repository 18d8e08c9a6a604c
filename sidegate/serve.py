"""Entry points of the long-running services (`sidegate serve authz|extproc`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal

from sidegate.config import SidegateConfig
from sidegate.store import client
from sidegate.trust import MissingToken, Token, load_token

log = logging.getLogger("sidegate")


def _loop_policy() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass


def store_url(cfg: SidegateConfig) -> str:
    url = os.environ.get("SIDEGATE_REDIS_URL") or cfg.store.url
    if not url:
        raise SystemExit("no store: set store.url or SIDEGATE_REDIS_URL (`sidegate up` starts an embedded Valkey)")
    return url


def internal_token(cfg: SidegateConfig) -> Token:
    """The secret Envoy presents on every call; without one the service does not start (its ports
    would hand provider keys and tenant identities to any local process)."""
    try:
        return Token(load_token(cfg))
    except MissingToken as exc:
        raise SystemExit(str(exc)) from None


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _authz(cfg: SidegateConfig) -> None:
    from authz.service import serve
    from authz.throttle import FailureThrottle

    token = internal_token(cfg)
    redis = client(store_url(cfg), cfg.store.socket_timeout_s)
    throttle = FailureThrottle.from_config(cfg.services)
    server, cache = await serve(redis, cfg.services.host, cfg.services.authz_port, token, throttle)
    log.info("authz listening on %s:%d", cfg.services.host, cfg.services.authz_port)
    if cfg.services.authz_metrics_port:
        from sidegate import metrics

        metrics.configure(cfg)
        metrics.start_metrics_server(metrics.service_metrics_port(cfg, "authz"), cfg.services.metrics_host)
    await _until_signal()
    await cache.stop()
    await server.stop(grace=cfg.services.grpc_timeout_s)
    await redis.aclose()


def _quiet_gc() -> None:
    """After start-up (tokenizer, embedding model, config loaded): move every live object out of the
    collector's reach and collect the young generation less often. Full collections otherwise scan
    the model's objects every few thousand requests and show up as multi-millisecond p99 stalls."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def _extproc(cfg: SidegateConfig) -> None:
    from extproc.app import serve
    from sidegate.resp import FastRedis

    token = internal_token(cfg)
    redis = client(store_url(cfg), cfg.store.socket_timeout_s)
    hot = FastRedis.from_url(store_url(cfg), cfg.store.socket_timeout_s)  # the per-request scripts
    server, app = await serve(cfg, redis, cfg.services.host, cfg.services.extproc_port, token, hot)
    _quiet_gc()
    log.info("extproc listening on %s:%d", cfg.services.host, cfg.services.extproc_port)
    await _until_signal()
    await app.stop_serving(server, float(os.environ.get("SIDEGATE_DRAIN_S", "30")))
    await app.aclose()
    await redis.aclose()
    if hot is not None:
        await hot.aclose()


def run(service: str, cfg: SidegateConfig) -> None:
    logging.basicConfig(level=os.environ.get("SIDEGATE_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _loop_policy()
    profile = os.environ.get("SIDEGATE_PROFILE")  # developer aid: cProfile this process into a file
    if profile:
        import cProfile

        with cProfile.Profile() as prof:
            asyncio.run(_authz(cfg) if service == "authz" else _extproc(cfg))
        prof.dump_stats(f"{profile}.{service}.{os.getpid()}")
        return
    asyncio.run(_authz(cfg) if service == "authz" else _extproc(cfg))

"""`python -m authz -c CONFIG`: the ext_authz service (tenant keys)."""

from __future__ import annotations

import logging

from authz.service import serve
from sidegate import metrics, metrics_server
from sidegate.config import SidegateConfig
from sidegate.features.auth.throttle import FailureThrottle
from sidegate.process import command_line, internal_token, store_url, until_signal
from sidegate.store.redispy import client

log = logging.getLogger("sidegate")


async def main(cfg: SidegateConfig) -> None:
    token = internal_token(cfg)
    redis = client(store_url(cfg), cfg.store.socket_timeout_s)
    throttle = FailureThrottle.from_config(cfg.services)
    server, cache = await serve(redis, cfg.services.host, cfg.services.authz_port, token, throttle)
    log.info("authz listening on %s:%d", cfg.services.host, cfg.services.authz_port)
    if cfg.services.authz_metrics_port:
        metrics.configure(cfg)
        metrics_server.start_metrics_server(metrics_server.service_metrics_port(cfg, "authz"), cfg.services.metrics_host)
    await until_signal()
    await cache.stop()
    await server.stop(grace=cfg.services.grpc_timeout_s)
    await redis.aclose()


if __name__ == "__main__":
    command_line("authz", main)

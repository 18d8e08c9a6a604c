"""`sidegate serve xds -c CONFIG` (`python -m sidegate.xds`): the ADS server Envoy's xDS-mode
bootstrap points at, fed by the config follower (sidegate/xds/follower.py)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from sidegate import config as config_mod
from sidegate import metrics_server, process
from sidegate.config import SidegateConfig, local_address
from sidegate.health import add_health, set_serving
from sidegate.store.redispy import client
from sidegate.xds.follower import Follower
from sidegate.xds.server import AdsServer

log = logging.getLogger("sidegate.xds")

METRICS_PORT_ENV = "SIDEGATE_XDS_METRICS_PORT"
"""Where the xDS server serves its /metrics (unset or 0: nowhere)."""


async def main(cfg: SidegateConfig, cfg_path: Path) -> None:
    token = process.internal_token(cfg)
    redis = client(process.store_url(cfg), 2.0)
    ads = AdsServer(token)
    follower = Follower(cfg, cfg_path, redis, ads, lambda p: config_mod.load(p))
    await follower.start()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    health = add_health(server)
    host = local_address(cfg.services.host)
    server.add_insecure_port(f"{host}:{cfg.services.xds_port}")
    await server.start()
    await set_serving(health, "envoy.service.discovery.v3.AggregatedDiscoveryService")
    metrics_port = int(os.environ.get(METRICS_PORT_ENV, "0") or 0)
    if metrics_port:  # its pushes, ACKed versions and NACKs (sidegate_xds_*)
        metrics_server.start_metrics_server(metrics_port, cfg.services.metrics_host)
    log.info("xDS server on %s:%d (routing document version %s)", host, cfg.services.xds_port, follower.good)
    task = asyncio.create_task(follower.run())
    try:
        await process.until_signal()
    finally:
        task.cancel()
        await server.stop(1.0)
        await redis.aclose()


def command_line(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m sidegate.xds")
    ap.add_argument("-c", "--config", required=True)
    args = ap.parse_args(argv)
    cfg = config_mod.load_or_exit(args.config)
    path = Path(args.config)
    process.run("xds", lambda c: main(c, path), cfg)

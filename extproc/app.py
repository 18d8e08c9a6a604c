"""Assembles the pipeline from the config: the one place that lists the stages in order."""

from __future__ import annotations

import asyncio
import logging

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from redis.asyncio import Redis

from extproc.gateway import Gateway
from extproc.server import ExternalProcessor
from extproc.stages.auth import AuthStage
from extproc.stages.parse import ParseStage
from extproc.stages.route import RouteStage
from extproc.upstream import Upstream
from sidegate.config import SidegateConfig
from sidegate.health import add_health, set_serving

log = logging.getLogger("sidegate.extproc")


def build(cfg: SidegateConfig, redis: Redis | None = None) -> tuple[Gateway, Upstream]:
    stages = [AuthStage(), ParseStage(cfg.listener.max_request_bytes), RouteStage(cfg)]
    return Gateway(stages), Upstream(cfg)


async def serve(cfg: SidegateConfig, redis: Redis | None, host: str, port: int) -> grpc.aio.Server:
    gateway, upstream = build(cfg, redis)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)])
    pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(gateway, upstream), server)
    health = add_health(server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await set_serving(health, "envoy.service.ext_proc.v3.ExternalProcessor")
    return server


async def run_forever(server: grpc.aio.Server) -> None:
    try:
        await server.wait_for_termination()
    except asyncio.CancelledError:
        await server.stop(grace=5)

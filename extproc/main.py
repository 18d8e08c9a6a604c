"""The extproc process: serves one :class:`sidegate.app.App` to Envoy over the ext_proc gRPC stream,
the HTTP front (and its try lane) and the access-log stream."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from dataclasses import dataclass

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc.direct import AccessLogAdapter
from extproc.front import Front, FrontServer
from extproc.lean import PROCESS, LeanServer, process_handler
from extproc.server import ExternalProcessor
from extproc.trylane import TryLane
from sidegate import metrics_server
from sidegate.app import App, build
from sidegate.config import SidegateConfig, local_address
from sidegate.health import add_health, set_serving
from sidegate.sizes import grpc_max_message
from sidegate.store import Store
from sidegate.trust import Token

log = logging.getLogger("sidegate.extproc")


@dataclass
class Service:
    """The app and the adapters serving it."""

    app: App
    processor: ExternalProcessor | None = None
    direct: AccessLogAdapter | None = None
    front: FrontServer | None = None
    lean: LeanServer | None = None

    async def stop_serving(self, server: grpc.aio.Server, grace_s: float) -> None:
        """Graceful stop: in-flight ext_proc streams (e.g. a long SSE response) may finish within
        the grace period; the access-log streams (which never end by themselves) are closed once
        they are the only RPCs left and Envoy had time to flush its last batch."""
        active = self.processor.active if self.processor is not None else 0
        log.info("extproc stopping: %d ext_proc streams in flight, up to %.0fs for them to end", active, grace_s)
        started = time.monotonic()
        if self.front is not None:
            await self.front.close(grace_s)
        if self.lean is not None:
            await self.lean.close(max(0.0, grace_s - (time.monotonic() - started)))
        stopping = asyncio.ensure_future(server.stop(grace=grace_s))
        said = started
        while not stopping.done():
            if self.processor is None or self.processor.active == 0:
                await asyncio.sleep(0.2)  # Envoy flushes the access log every 50 ms
                if self.direct is not None:
                    self.direct.close()
                try:
                    await asyncio.wait_for(asyncio.shield(stopping), 1.0)
                except TimeoutError:
                    # No request stream is left, yet an RPC is: an access-log stream Envoy opened
                    # after close() saw the others (seen after a token rotation). Waiting for it
                    # would take the whole grace period; gRPC's smaller grace ends it now.
                    log.info("extproc stopping: no request stream left; ending the other RPCs")
                    await server.stop(None)
                break
            if time.monotonic() - said >= 5:  # a stream Envoy keeps open shows in the log
                said = time.monotonic()
                log.info("extproc stopping: still %d ext_proc streams in flight", self.processor.active)
            await asyncio.sleep(0.05)
        await stopping
        log.info("extproc stopped serving in %.1fs", time.monotonic() - started)

    async def aclose(self) -> None:
        await self.app.aclose()


M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter: allocations at least this large get their own mapping."""
LARGE_ALLOCATION = 1024 * 1024


def return_large_buffers_to_the_os() -> None:
    """Every request body of 1 MiB and more (and its parsed text, its translation, its gRPC message)
    gets its own mapping, unmapped when freed. glibc's default raises that threshold to the largest
    block freed so far (up to 32 MiB), after which large bodies come from the heap and stay there:
    measured, extproc kept ~1.8 GB after 16 concurrent 20 MiB requests (docs/performance.md).
    Setting the threshold also switches that adjustment off. No-op outside glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(M_MMAP_THRESHOLD, LARGE_ALLOCATION)
    except OSError:
        pass


async def serve(
    cfg: SidegateConfig, store: Store | None, host: str, port: int, token: Token
) -> tuple[grpc.aio.Server, Service]:
    return_large_buffers_to_the_os()
    app = build(cfg, store)
    service = Service(app)
    await app.start()
    if cfg.services.metrics_port:
        metrics_server.start_metrics_server(metrics_server.service_metrics_port(cfg, "extproc"), cfg.services.metrics_host)
    # A buffered provider answer reaches the per-try stage as one message (up to max_response_bytes).
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", grpc_max_message(cfg))])
    service.processor = ExternalProcessor(app.gateway, app.tries, token)
    worker = int(os.environ.get("SIDEGATE_EXTPROC_WORKER", "0"))
    trylane = TryLane(app.tries, worker, local_address(host), cfg.services.front_port, token.value) if cfg.services.front == "http" else None
    if trylane is not None:
        trylane.start()
    service.direct = AccessLogAdapter(app.completion_hooks, token, trylane.abandon if trylane is not None else None, app.tries)
    pb_grpc.add_ExternalProcessorServicer_to_server(service.processor, server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(service.direct, server)
    health = add_health(server)
    if cfg.services.front == "http":  # listening before the gRPC port (what readiness waits for)
        service.front = FrontServer(Front(app.gateway, worker, trylane), token)
        await service.front.start(host, cfg.services.front_port)
    if cfg.services.grpc_server == "lean":  # the ext_proc streams on their own port (extproc/lean.py)
        service.lean = LeanServer(PROCESS, process_handler(service.processor), grpc_max_message(cfg))
        await service.lean.start(host, cfg.services.lean_port)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await set_serving(health, "envoy.service.ext_proc.v3.ExternalProcessor")
    return server, service

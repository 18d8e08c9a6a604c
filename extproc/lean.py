"""The ext_proc service on the lean gRPC server (`services.grpc_server: lean`, extproc/h2c.py):
the same per-stream handlers as the grpc.aio servicer (extproc/server.py), on a port of its own
(`services.lean_port`); grpc.aio keeps the access-log and health services."""

from __future__ import annotations

import asyncio
import logging
import time

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc.h2c import H2CProtocol, Handler
from extproc.h2call import UNAUTHENTICATED, Abort, Call
from extproc.server import ExternalProcessor, answer_parts

log = logging.getLogger("sidegate.extproc")

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


def process_handler(processor: ExternalProcessor) -> Handler:
    """`ExternalProcessor.Process` for the lean server: the internal token first (as
    sidegate/trust.py `require` does: UNAUTHENTICATED and nothing more), then one answer per message."""
    token = processor.token
    parse = pb.ProcessingRequest.FromString

    async def process(call: Call) -> None:
        if not token.valid_metadata(call.metadata):
            raise Abort(UNAUTHENTICATED)
        handler = processor.open(call.metadata)
        try:
            while (msg := await call.read()) is not None:
                for part in answer_parts(await handler.handle(parse(msg))):
                    if part is None:  # this part leaves before the next is made: our queue and
                        call.flush()  # uvloop's both send at the end of the loop's turn, so end it
                        await asyncio.sleep(0)  # (measured without the yield: burst TTFE +3 ms)
                    else:
                        await call.send(part.SerializeToString())
        finally:
            processor.closed(handler)

    return process


class LeanServer:
    """Listens for HTTP/2 connections and serves one method on them."""

    def __init__(self, path: str, handler: Handler, max_message: int, window: int = 64 << 20):
        self.path = path
        self.handler = handler
        self.max_message = max_message
        self.window = window
        self.connections: set[H2CProtocol] = set()
        self.server: asyncio.Server | None = None

    def _protocol(self) -> H2CProtocol:
        conn = H2CProtocol(self.path, self.handler, max_message=self.max_message, window=self.window,
                           on_close=self.connections.discard)  # fmt: skip
        self.connections.add(conn)
        return conn

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            self._protocol, host, port, reuse_address=True
        )

    async def close(self, grace_s: float) -> None:
        """Graceful stop: GOAWAY to every connection, which close as their streams end (a stream
        still open after `grace_s` is cut)."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.goaway()
        deadline = time.monotonic() + grace_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self.connections:
            log.info(
                "lean gRPC server: %d connections cut at the end of the grace period", len(self.connections)
            )

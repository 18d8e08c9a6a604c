"""Connection-level faults a scripted behaviour asks for: a delay, a hang, a reset (RST, no FIN).

A reset raises :class:`Dropped` so the handler writes nothing more; the server then waits for aiohttp
to cancel it, as a real provider's dead connection would leave the client waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

from aiohttp import web

from sidegate.fakes.behavior import Behavior

RESET_AFTER_EVENTS_S = 0.25
"""The pause between a stream's last event and its RST (the peer reads the events first)."""


class Dropped(Exception):
    """The connection was reset or abandoned on purpose; nothing more to write."""


def reset_connection(request: web.BaseRequest) -> None:
    """Close the request's TCP connection abruptly (RST, no FIN)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def hang(request: web.BaseRequest, max_s: float, closing: Callable[[], bool]) -> None:
    """Wait, silent, until the client leaves, ``max_s`` passes or the server closes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s
    while loop.time() < deadline and not closing():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.05)


async def before_headers(request: web.BaseRequest, b: Behavior, closing: Callable[[], bool]) -> None:
    """The faults that strike before any answer header: delay, hang then reset, immediate reset."""
    if b.delay_s > 0:
        await asyncio.sleep(b.delay_s)
    if b.hang:
        await hang(request, b.hang_max_s, closing)
        reset_connection(request)
        raise Dropped
    if b.reset and b.reset_after_chunks is None:
        reset_connection(request)
        raise Dropped


async def end_stream(
    request: web.BaseRequest,
    resp: web.StreamResponse,
    b: Behavior | None,
    closing: Callable[[], bool],
    *,
    reset: bool,
    cut: bool,
) -> web.StreamResponse:
    """How every fake stream ends once its events are written, whatever their wire format: a stall
    then a reset, a reset (``raise Dropped``), or a linger then the end; a ``cut`` answer (fewer
    events than the whole) also closes the connection, so the client sees it end early."""
    if b is not None and b.stall_after_chunks is not None:
        await hang(request, b.hang_max_s, closing)  # a provider gone silent mid-stream
        reset = True
    if reset:
        # An RST makes the kernel drop what the peer has not read yet, and Envoy drops what its
        # filters have not passed on: on a loaded box 10 ms was not always enough for the events
        # to reach the gateway, and the scenario ("events, then a reset") became "a reset".
        await asyncio.sleep(RESET_AFTER_EVENTS_S)
        reset_connection(request)
        raise Dropped
    if b is not None and b.linger_s > 0:
        await asyncio.sleep(b.linger_s)
    await resp.write_eof()
    if cut:
        resp.force_close()
    return resp

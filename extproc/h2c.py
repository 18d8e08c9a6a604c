"""A lean gRPC server for one bidi-streaming method over cleartext HTTP/2 (h2c, prior knowledge:
what Envoy's gRPC client speaks to a plain cluster), on an asyncio Protocol.

Why not grpc.aio: server CPU per ext_proc stream was ~300-450 µs per stream opened plus
~100-150 µs per message (grpcio 1.85, uvloop, trivial echo servicer; grpclib is no better), most
of every gRPC path's cost; this framer's numbers are in docs/performance.md ("A lean gRPC
server"). It parses the frames itself (RFC 9113), uses `hpack` only to decode request headers,
answers with pre-encoded headers and trailers, and keeps to both sides' flow-control windows.
Everything else (unknown paths, compression, push) is refused, not emulated.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from hpack import Decoder
from hpack.exceptions import HPACKError

from extproc.h2call import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEAD,
    HEADERS,
    MAX_FRAME,
    MAX_WINDOW,
    NO_ERROR,
    OK,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    S_ENABLE_PUSH,
    S_INITIAL_WINDOW,
    S_MAX_FRAME,
    SETTINGS,
    UNIMPLEMENTED,
    UNKNOWN,
    WINDOW_UPDATE,
    Abort,
    Call,
    StreamReset,
    frame,
    trailers,
)

log = logging.getLogger("sidegate.h2c")


Handler = Callable[[Call], Awaitable[None]]
"""A call's handler: reads with `call.read()`, answers with `await call.send(...)`; returning ends the
call with grpc-status 0, raising :class:`Abort` with its status, anything else with INTERNAL."""


class H2CProtocol(asyncio.Protocol):
    """One HTTP/2 connection from a gRPC client (Envoy): one task per stream runs the handler."""

    def __init__(self, path: str, handler: Handler, *, max_message: int = 4 << 20, window: int = 64 << 20,
                 on_close: Callable[[H2CProtocol], None] | None = None):  # fmt: skip
        self.path = path
        self.handler = handler
        self.max_message = max_message
        self.window = min(window, MAX_WINDOW)
        """Our receive window, per stream and for the connection (what the peer may send unread)."""
        self.update_at = max(1, self.window // 4)
        """Consumed bytes not yet given back that make us send a WINDOW_UPDATE."""
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        """Bytes of a frame not yet whole (or of the preface)."""
        self.need = 24
        """How many bytes `buf` must hold before parsing is worth trying."""
        self.preface = False
        self.decoder = Decoder()
        self.streams: dict[int, Call] = {}
        self.last_stream = 0
        self.headers_of: tuple[int, int, bytearray] | None = None
        """A header block still waiting for its CONTINUATION frames: (stream, flags, block)."""
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.send_window = 65535
        self.conn_unacked = 0
        self.blocked: set[Call] = set()
        self.paused = False
        self._drained: asyncio.Future[None] | None = None
        self.going_away = False
        self.out: list[bytes | memoryview] = []
        """Bytes written in this turn of the loop, not yet handed to the transport."""

    # -- transport -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is no asyncio.Transport subclass)
        settings = struct.pack(
            ">HIHIHI", S_ENABLE_PUSH, 0, S_INITIAL_WINDOW, self.window, S_MAX_FRAME, MAX_FRAME
        )
        extra = self.window - 65535
        self.write(
            frame(SETTINGS, 0, 0, settings)
            + (frame(WINDOW_UPDATE, 0, 0, extra.to_bytes(4, "big")) if extra > 0 else b"")
        )

    def write(self, data: bytes | memoryview) -> None:
        """Queue bytes for the socket: written together at the end of this turn of the event loop
        (one send for the answers of every stream that ran in it: ~40 µs of CPU saved per send)."""
        out = self.out
        out.append(data)
        if len(out) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def flush(self) -> None:
        out = self.out
        if not out:  # (flushed early: Call.flush)
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        if self.paused:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def connection_lost(self, exc: Exception | None) -> None:
        for call in list(self.streams.values()):
            call.cancel()
        self.resume_writing()
        if self.on_close is not None:
            self.on_close(self)

    def goaway(self) -> None:
        """No new streams (a graceful stop); the connection closes when the last one ends."""
        if not self.going_away:
            self.going_away = True
            self.write(frame(GOAWAY, 0, 0, self.last_stream.to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")))
        if not self.streams and self.transport is not None:
            self._close()

    def _close(self) -> None:
        if self.out:
            self.flush()
        if self.transport is not None:
            self.transport.close()

    def _error(self, code: int) -> None:
        self.write(frame(GOAWAY, 0, 0, self.last_stream.to_bytes(4, "big") + code.to_bytes(4, "big")))
        if self.transport is not None:
            self._close()

    # -- frames in -------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.buf or not self.preface:
            # A frame split across reads: parsed once it is whole (one copy per frame, not per read).
            self.buf += data
            if len(self.buf) < self.need:
                return
            data = bytes(self.buf)
            self.buf.clear()
            if not self.preface:
                if data[:24] != PREFACE:
                    self._error(PROTOCOL_ERROR)
                    return
                self.preface = True
                data = data[24:]
        pos, end = 0, len(data)
        view = memoryview(data)
        while end - pos >= 9:
            head = HEAD.unpack_from(data, pos)[0]
            length = head >> 8
            if length > MAX_FRAME:
                self._error(FRAME_SIZE_ERROR)
                return
            if end - pos < 9 + length:
                self.need = 9 + length
                self.buf += view[pos:]
                return
            kind, flags = head & 0xFF, data[pos + 4]
            stream = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = view[pos + 9 : pos + 9 + length]
            pos += 9 + length
            if self.headers_of is not None and kind != CONTINUATION:
                self._error(PROTOCOL_ERROR)
                return
            if not self._frame(kind, flags, stream, payload):
                return
        self.need = 9
        if pos < end:
            self.buf += view[pos:]

    def _frame(self, kind: int, flags: int, stream: int, payload: memoryview) -> bool:
        if kind == DATA:
            counted = len(payload)  # flow control counts the whole payload, padding too
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            return self._on_data(stream, flags, payload, counted)
        if kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:
                return self._on_headers(stream, flags, bytes(payload))
            self.headers_of = (stream, flags, bytearray(payload))
        elif kind == CONTINUATION:
            if self.headers_of is None or self.headers_of[0] != stream:
                self._error(PROTOCOL_ERROR)
                return False
            self.headers_of[2].extend(payload)
            if flags & END_HEADERS:
                sid, first_flags, block = self.headers_of
                self.headers_of = None
                return self._on_headers(sid, first_flags, bytes(block))
        elif kind == SETTINGS:
            if not flags & ACK:
                self._on_settings(payload)
                self.write(frame(SETTINGS, ACK, 0))
        elif kind == WINDOW_UPDATE:
            inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.send_window += inc
                if self.blocked:
                    for call in list(self.blocked):
                        call._window_opened()
                    self.blocked.clear()
            elif (call := self.streams.get(stream)) is not None:
                call.send_window += inc
                call._window_opened()
                self.blocked.discard(call)
        elif kind == PING:
            if not flags & ACK:
                self.write(frame(PING, ACK, 0, bytes(payload)))
        elif kind == RST_STREAM:
            if (call := self.streams.get(stream)) is not None:
                call.cancel()
        elif kind == GOAWAY:
            self.going_away = True
            if not self.streams and self.transport is not None:
                self._close()
        elif kind == PUSH_PROMISE:
            self._error(PROTOCOL_ERROR)
            return False
        return True  # PRIORITY and unknown frame types: ignored (RFC 9113 5.5)

    def _on_settings(self, payload: memoryview) -> None:
        for i in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == S_INITIAL_WINDOW:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for call in self.streams.values():  # RFC 9113 6.9.2: open streams' windows move too
                    call.send_window += delta
                    if delta > 0:
                        call._window_opened()
            elif key == S_MAX_FRAME:
                self.peer_max_frame = value

    def _on_data(self, stream: int, flags: int, payload: memoryview, counted: int) -> bool:
        self.conn_unacked += counted
        if self.conn_unacked >= self.update_at:
            self.write(frame(WINDOW_UPDATE, 0, 0, self.conn_unacked.to_bytes(4, "big")))
            self.conn_unacked = 0
        call = self.streams.get(stream)
        if call is None:  # a stream we reset or ended: its data still counted for the connection
            if stream > self.last_stream:
                self._error(PROTOCOL_ERROR)
                return False
            return True
        call._data(payload, bool(flags & END_STREAM))
        return True

    def _on_headers(self, stream: int, flags: int, block: bytes) -> bool:
        try:
            headers = self.decoder.decode(block)
        except HPACKError:
            self._error(COMPRESSION_ERROR)  # the table is out of step, the connection is done
            return False
        call = self.streams.get(stream)
        if call is not None:  # request trailers (gRPC clients send none, but they may)
            call._data(b"", bool(flags & END_STREAM))
            return True
        if stream <= self.last_stream or not stream & 1:
            self._error(PROTOCOL_ERROR)
            return False
        self.last_stream = stream
        if self.going_away:
            self.write(
                frame(RST_STREAM, 0, stream, REFUSED_STREAM.to_bytes(4, "big"))
            )  # REFUSED_STREAM: retry elsewhere
            return True
        path = ""
        metadata: list[tuple[str, str]] = []
        for name, value in headers:
            if name[0] == ":":
                if name == ":path":
                    path = value
            else:
                metadata.append((name, value))
        call = Call(self, stream, metadata)
        self.streams[stream] = call
        if flags & END_STREAM:
            call._ended = True
        if path != self.path:
            self.end(call, UNIMPLEMENTED, f"unknown method {path}")
            return True
        call.task = asyncio.get_running_loop().create_task(self._run(call))
        return True

    async def _run(self, call: Call) -> None:
        try:
            await self.handler(call)
        except Abort as abort:
            self.end(call, abort.status, abort.message)
        except (StreamReset, asyncio.CancelledError):
            self.streams.pop(call.id, None)
        except Exception:
            log.exception("gRPC handler failed")
            self.end(call, UNKNOWN, "handler error")
        else:
            self.end(call, OK)
        finally:
            if self.going_away and not self.streams and self.transport is not None:
                self._close()

    def end(self, call: Call, status: int, message: str = "") -> None:
        """The call's trailers (END_STREAM); our side of the stream is done."""
        if self.streams.pop(call.id, None) is None:
            return
        block = trailers(status, message, with_headers=not call._headers_sent)
        call._headers_sent = True
        if not call._ended:
            # The client still sends: RST_STREAM(NO_ERROR) after the trailers tells it to stop (RFC 9113 8.1).
            self.write(
                frame(HEADERS, END_HEADERS | END_STREAM, call.id, block)
                + frame(RST_STREAM, 0, call.id, bytes(4))
            )
        else:
            self.write(frame(HEADERS, END_HEADERS | END_STREAM, call.id, block))

"""HTTP/2 frames and one gRPC call's side of the lean server (extproc/h2c.py): the frame and
trailer encoders, and :class:`Call`, which a handler reads requests from and sends answers on."""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT, S_INITIAL_WINDOW, S_MAX_FRAME, S_MAX_HEADER_LIST = range(1, 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, _, STREAM_CLOSED, FRAME_SIZE_ERROR = range(7)
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x7, 0x8, 0x9
MAX_WINDOW = 2**31 - 1
MAX_FRAME = 1 << 20
"""Largest frame we accept (SETTINGS_MAX_FRAME_SIZE): big bodies in fewer frames."""
OK, CANCELLED, UNKNOWN, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAUTHENTICATED = 0, 1, 2, 8, 12, 13, 16

HEAD = struct.Struct(">I")  # frame length (24 bits) + type, packed together
RESPONSE_HEADERS = b"\x88" + b"\x0f\x10\x10application/grpc"
"""`:status: 200` (static index 8), `content-type: application/grpc` (literal, not indexed): the
peer's HPACK table is never touched, so no encoder state is kept."""


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(len(payload) << 8 | kind) + bytes((flags,)) + stream.to_bytes(4, "big") + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing, new name (lengths < 127: no Huffman, one byte)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


def _message_text(message: str) -> bytes:
    """grpc-message: percent-encoded (RFC 3986 unreserved and printable ASCII stay), cut to fit at
    a character's boundary (never half an escape or half a UTF-8 sequence)."""
    out, size = [], 0
    for c in message:
        piece = c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode())
        if size + len(piece) > 120:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out).encode()


def trailers(status: int, message: str = "", *, with_headers: bool = False) -> bytes:
    """The header block of the trailers (or of a trailers-only answer, `with_headers`)."""
    block = _literal(b"grpc-status", str(status).encode())
    if status != OK and message:
        block += _literal(b"grpc-message", _message_text(message))
    return (RESPONSE_HEADERS + block) if with_headers else block


class Abort(Exception):
    """Ends a call with a gRPC status (its trailers), like grpc.aio's `context.abort`."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(status, message)
        self.status = status
        self.message = message


class StreamReset(Exception):
    """The peer reset the stream (RST_STREAM) or the connection went away."""


class Call:
    """One gRPC call: the request metadata, its messages as they arrive, and the answers."""

    __slots__ = (
        "_buf",
        "_ended",
        "_headers_sent",
        "_messages",
        "_reset",
        "_unacked",
        "_waiter",
        "_window_waiter",
        "conn",
        "id",
        "metadata",
        "send_window",
        "task",
    )  # fmt: skip

    def __init__(self, conn: Any, stream_id: int, metadata: list[tuple[str, str]]):
        """`conn`: the stream's connection, an extproc/h2c.py H2CProtocol (not imported: no cycle)."""
        self.conn = conn
        self.id = stream_id
        self.metadata = metadata
        """The request's headers that are not pseudo-headers (the gRPC metadata), in order."""
        self._messages: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._buf = bytearray()
        self._ended = False
        self._reset = False
        self.send_window = conn.peer_initial_window
        self._window_waiter: asyncio.Future[None] | None = None
        self._headers_sent = False
        self._unacked = 0
        self.task: asyncio.Task[None] | None = None

    # -- receiving (called by the protocol) --------------------------------------------------------

    def _data(self, data: bytes | memoryview, end: bool) -> None:
        conn = self.conn
        if data:
            self._unacked += len(data)
            if self._unacked >= conn.update_at and not end:
                conn.write(frame(WINDOW_UPDATE, 0, self.id, self._unacked.to_bytes(4, "big")))
                self._unacked = 0
            buf = self._buf
            if (
                not buf
                and len(data) >= 5
                and data[0] == 0
                and int.from_bytes(data[1:5], "big") == len(data) - 5
            ):
                self._messages.append(bytes(data[5:]))  # the usual case: one whole message per DATA frame
            else:
                buf += data
                while len(buf) >= 5:
                    if buf[0] != 0:  # compressed: never offered (no grpc-accept-encoding)
                        self._fail(INTERNAL, "compressed messages are not accepted")
                        return
                    n = int.from_bytes(buf[1:5], "big")
                    if n > conn.max_message:
                        self._fail(
                            RESOURCE_EXHAUSTED,
                            f"message of {n} bytes is over the limit of {conn.max_message}",
                        )
                        return
                    if len(buf) < 5 + n:
                        break
                    self._messages.append(bytes(buf[5 : 5 + n]))
                    del buf[: 5 + n]
        if end:
            self._ended = True
        self._wake()

    def _fail(self, status: int, message: str) -> None:
        """A request we will not read on: answer with `status` (and RST_STREAM), end the handler."""
        self.conn.end(self, status, message)
        self.cancel()

    def cancel(self) -> None:
        self._reset = True
        self.conn.streams.pop(self.id, None)
        self._wake()
        if self._window_waiter is not None and not self._window_waiter.done():
            self._window_waiter.set_result(None)
        if self.task is not None:
            self.task.cancel()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _window_opened(self) -> None:
        w = self._window_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- the handler's side ------------------------------------------------------------------------

    async def read(self) -> bytes | None:
        """The next request message, None once the client ended its side."""
        while not self._messages:
            if self._reset:
                raise StreamReset
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        return self._messages.popleft()

    def __aiter__(self) -> Call:
        return self

    async def __anext__(self) -> bytes:
        msg = await self.read()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def send(self, message: bytes) -> None:
        """One answer: framed and written at once when the peer's windows allow, else as they open."""
        if self._reset:
            raise StreamReset
        conn = self.conn
        head = b"\x00" + len(message).to_bytes(4, "big")
        if not self._headers_sent:
            self._headers_sent = True
            conn.write(frame(HEADERS, END_HEADERS, self.id, RESPONSE_HEADERS))
        total = len(message) + 5
        if total <= self.send_window and total <= conn.send_window and total <= conn.peer_max_frame:
            self.send_window -= total
            conn.send_window -= total
            conn.write(frame_head(total, self.id) + head + message)
        else:
            await self._send_slow(memoryview(head + message))
        if conn.paused:
            await conn.drain()

    def flush(self) -> None:
        """Hand what was sent so far to the socket now, not at the end of the loop's turn."""
        if self.conn.out:
            self.conn.flush()

    async def _send_slow(self, data: memoryview) -> None:
        conn = self.conn
        while data:
            n = min(len(data), self.send_window, conn.send_window, conn.peer_max_frame)
            if n <= 0:
                self._window_waiter = asyncio.get_running_loop().create_future()
                conn.blocked.add(self)
                await self._window_waiter
                self._window_waiter = None
                if self._reset:
                    raise StreamReset
                continue
            self.send_window -= n
            conn.send_window -= n
            conn.writelines((frame_head(n, self.id), data[:n]))
            data = data[n:]
            if conn.paused:
                await conn.drain()


def frame_head(length: int, stream: int, kind: int = DATA, flags: int = 0) -> bytes:
    return HEAD.pack(length << 8 | kind) + bytes((flags,)) + stream.to_bytes(4, "big")

"""The lean gRPC server's framer (extproc/h2c.py, h2call.py) against a hand-driven HTTP/2 client on a real
socket: frames split across reads, CONTINUATION and padding, both directions' flow control, the
peer's frame size, RST_STREAM mid-stream, PING, an unknown method, and the ext_proc handler's
internal-token check (extproc/lean.py)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from hpack import Decoder, Encoder

from extproc import h2call as h2c
from extproc.h2c import H2CProtocol, Handler
from extproc.h2call import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Call,
    frame,
)
from extproc.lean import PROCESS, process_handler
from sidegate.trust import Token
from sidegate.wire import INTERNAL_TOKEN_HEADER

PATH = "/test.Echo/Call"


def grpc_message(data: bytes) -> bytes:
    return b"\x00" + len(data).to_bytes(4, "big") + data


class Peer:
    """An HTTP/2 client speaking frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.enc, self.dec = Encoder(), Decoder()

    def send(self, kind: int, flags: int, stream: int, payload: bytes = b"") -> None:
        self.writer.write(frame(kind, flags, stream, payload))

    def block(self, path: str = PATH, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
        return self.enc.encode([(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "sidegate"),
                                ("content-type", "application/grpc"), ("te", "trailers"), *metadata])  # fmt: skip

    async def frame(self) -> tuple[int, int, int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(9), 5)
        length = int.from_bytes(head[:3], "big")
        payload = await self.reader.readexactly(length)
        return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload

    async def answer(
        self, stream: int, on_frame: Callable[[int, int, bytes], Any] | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The stream's DATA bytes and its trailers (the last header block, END_STREAM)."""
        data, headers = b"", {}
        while True:
            kind, flags, sid, payload = await self.frame()
            if on_frame is not None:
                on_frame(kind, sid, payload)
            if sid != stream:
                continue
            if kind == DATA:
                data += payload
            elif kind == HEADERS:
                headers.update(dict(self.dec.decode(payload)))
            if kind in (DATA, HEADERS) and flags & END_STREAM:
                return data, headers


async def serve(handler: Callable[[Call], Awaitable[None]], test: Callable[[Peer], Awaitable[None]],
                settings: bytes = b"", **kw: Any) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: H2CProtocol(PATH, handler, **kw), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer = Peer(reader, writer)
    writer.write(PREFACE + frame(SETTINGS, 0, 0, settings))
    try:
        await test(peer)
    finally:
        writer.close()
        server.close()


async def echo(call: Call) -> None:
    while (msg := await call.read()) is not None:
        await call.send(msg.upper())


def test_frames_split_across_reads_and_a_message_split_across_frames():
    async def test(peer: Peer) -> None:
        wire = frame(HEADERS, END_HEADERS, 1, peer.block())
        msg = grpc_message(b"hello world")
        wire += frame(DATA, 0, 1, msg[:7]) + frame(DATA, END_STREAM, 1, msg[7:])
        for i in range(len(wire)):  # one byte per write: every frame arrives in pieces
            peer.writer.write(wire[i : i + 1])
            await peer.writer.drain()
            await asyncio.sleep(0)
        data, trailers = await peer.answer(1)
        assert data == grpc_message(b"HELLO WORLD")
        assert (
            trailers[":status"] == "200"
            and trailers["content-type"] == "application/grpc"
            and trailers["grpc-status"] == "0"
        )

    asyncio.run(serve(echo, test))


def test_continuation_and_padding():
    seen: list[list[tuple[str, str]]] = []

    async def handler(call: Call) -> None:
        seen.append(call.metadata)
        await echo(call)

    async def test(peer: Peer) -> None:
        block = peer.block(metadata=(("x-one", "1"), ("x-two", "2" * 40)))
        pad = 7
        # HEADERS: padded, with the priority fields, the block's first half; CONTINUATION: the rest
        first = bytes((pad,)) + struct.pack(">IB", 0, 15) + block[:10] + b"\x00" * pad
        peer.send(HEADERS, PADDED | h2c.PRIORITY_FLAG, 1, first)
        peer.send(CONTINUATION, 0, 1, block[10:20])
        peer.send(CONTINUATION, END_HEADERS, 1, block[20:])
        peer.send(DATA, PADDED | END_STREAM, 1, bytes((3,)) + grpc_message(b"padded") + b"\x00" * 3)
        data, trailers = await peer.answer(1)
        assert data == grpc_message(b"PADDED") and trailers["grpc-status"] == "0"

    asyncio.run(serve(handler, test))
    assert ("x-one", "1") in seen[0] and ("x-two", "2" * 40) in seen[0]
    assert not any(k.startswith(":") for k, _ in seen[0])


def _answers_with(big: bytes) -> Handler:
    async def handler(call: Call) -> None:
        await call.read()
        await call.send(big)

    return handler


async def _ask_and_read_data(peer: Peer, limit: int, sizes: list[int]) -> bytes:
    """Opens stream 1 with one message, then reads DATA frames until `limit` bytes came."""
    peer.send(HEADERS, END_HEADERS, 1, peer.block())
    peer.send(DATA, END_STREAM, 1, grpc_message(b"go"))
    got = b""
    while len(got) < limit:
        kind, _, sid, payload = await peer.frame()
        if kind == DATA and sid == 1:
            got += payload
            sizes.append(len(payload))
    return got


def test_answers_keep_to_a_small_peer_window_and_the_peers_frame_size():
    big = b"x" * 40_000
    handler = _answers_with(big)

    async def test(peer: Peer) -> None:
        sizes: list[int] = []
        got = await _ask_and_read_data(peer, 100, sizes)  # the stream window is 100 bytes: no more until we open it
        assert len(got) == 100
        peer.send(WINDOW_UPDATE, 0, 1, (len(big) + 5).to_bytes(4, "big"))
        rest, trailers = await peer.answer(
            1, lambda kind, sid, p: sizes.append(len(p)) if kind == DATA and sid == 1 else None
        )
        assert got + rest == grpc_message(big) and trailers["grpc-status"] == "0"
        assert max(sizes) <= 16384  # the peer's SETTINGS_MAX_FRAME_SIZE (its default)

    # the stream window 100 bytes; the connection's stays 65535 (WINDOW_UPDATEs on stream 0 raise it)
    asyncio.run(serve(handler, test, settings=struct.pack(">HI", h2c.S_INITIAL_WINDOW, 100)))


def test_a_connection_window_smaller_than_the_answer_waits_for_window_updates():
    big = b"y" * 100_000
    handler = _answers_with(big)

    async def test(peer: Peer) -> None:
        got = await _ask_and_read_data(peer, 65535, [])  # the connection's initial window
        assert len(got) == 65535
        peer.send(WINDOW_UPDATE, 0, 0, (200_000).to_bytes(4, "big"))
        rest, _ = await peer.answer(1)
        assert got + rest == grpc_message(big)

    # the stream's window is large: only the connection's holds the answer back
    asyncio.run(serve(handler, test, settings=struct.pack(">HI", h2c.S_INITIAL_WINDOW, 1 << 20)))


def test_window_updates_follow_what_is_consumed():
    async def test(peer: Peer) -> None:
        updates: dict[int, int] = {}
        settings = await peer.frame()
        assert settings[0] == SETTINGS and struct.pack(">HI", h2c.S_INITIAL_WINDOW, 1000) in settings[3]
        peer.send(HEADERS, END_HEADERS, 1, peer.block())
        for i in range(6):  # 6 x 405 bytes: over the 1000-byte windows unless they are given back
            peer.send(DATA, END_STREAM if i == 5 else 0, 1, grpc_message(bytes([65 + i]) * 400))

        def count(kind: int, sid: int, payload: bytes) -> None:
            if kind == WINDOW_UPDATE:
                updates[sid] = updates.get(sid, 0) + int.from_bytes(payload, "big")

        data, trailers = await peer.answer(1, count)
        assert trailers["grpc-status"] == "0" and len(data) == 6 * 405
        assert updates.get(0, 0) >= 2000 and updates.get(1, 0) >= 2000

    asyncio.run(serve(echo, test, window=1000))


def test_rst_stream_mid_way_ends_the_handler_and_the_connection_serves_on():
    ended: list[str] = []

    async def handler(call: Call) -> None:
        try:
            await echo(call)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    async def test(peer: Peer) -> None:
        peer.send(HEADERS, END_HEADERS, 1, peer.block())
        peer.send(DATA, 0, 1, grpc_message(b"one"))
        while (await peer.frame())[0] != DATA:
            pass
        peer.send(RST_STREAM, 0, 1, h2c.CANCEL.to_bytes(4, "big"))
        peer.send(DATA, 0, 1, grpc_message(b"late"))  # data on a reset stream: dropped
        peer.send(HEADERS, END_HEADERS, 3, peer.block())
        peer.send(DATA, END_STREAM, 3, grpc_message(b"two"))
        data, trailers = await peer.answer(3)
        assert data == grpc_message(b"TWO") and trailers["grpc-status"] == "0"

    asyncio.run(serve(handler, test))
    assert ended == ["cancelled"]


def test_ping_is_answered_and_an_unknown_method_is_unimplemented():
    async def test(peer: Peer) -> None:
        peer.send(PING, 0, 0, b"12345678")
        while True:
            kind, flags, _, payload = await peer.frame()
            if kind == PING:
                assert flags == h2c.ACK and payload == b"12345678"
                break
        peer.send(HEADERS, END_HEADERS | END_STREAM, 1, peer.block(path="/other.Service/Call"))
        data, trailers = await peer.answer(1)
        assert data == b"" and trailers["grpc-status"] == str(h2c.UNIMPLEMENTED)

    asyncio.run(serve(echo, test))


class _Processor:
    """ExternalProcessor's interface to the lean handler (open / closed / token)."""

    def __init__(self) -> None:
        self.token = Token("t" * 32)
        self.opened: list[Any] = []
        self.active = 0

    def open(self, metadata: Any) -> Any:
        self.opened.append(list(metadata))
        self.active += 1
        processor = self

        class Handler:
            async def handle(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
                return pb.ProcessingResponse(request_headers=pb.HeadersResponse())

        processor.handler = Handler()
        return processor.handler

    def closed(self, handler: Any) -> None:
        self.active -= 1


def test_the_ext_proc_handler_refuses_a_call_without_the_internal_token():
    proc = _Processor()
    req = pb.ProcessingRequest(request_headers=pb.HttpHeaders()).SerializeToString()

    async def test(peer: Peer) -> None:
        peer.send(
            HEADERS,
            END_HEADERS,
            1,
            peer.block(path=PROCESS, metadata=((INTERNAL_TOKEN_HEADER, "wrong" * 8),)),
        )
        peer.send(DATA, 0, 1, grpc_message(req))
        data, trailers = await peer.answer(1)
        assert (
            data == b""
            and trailers["grpc-status"] == str(h2c.UNAUTHENTICATED)
            and "grpc-message" not in trailers
        )
        good = ((INTERNAL_TOKEN_HEADER, "t" * 32), ("x-sidegate-phase", "upstream"))
        peer.send(HEADERS, END_HEADERS, 3, peer.block(path=PROCESS, metadata=good))
        peer.send(DATA, END_STREAM, 3, grpc_message(req))
        data, trailers = await peer.answer(3)
        assert trailers["grpc-status"] == "0"
        assert pb.ProcessingResponse.FromString(data[5:]).WhichOneof("response") == "request_headers"

    async def run() -> None:
        loop = asyncio.get_running_loop()
        handler = process_handler(proc)  # type: ignore[arg-type]
        server = await loop.create_server(lambda: H2CProtocol(PROCESS, handler), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(PREFACE + frame(SETTINGS, 0, 0))
        try:
            await test(Peer(reader, writer))
        finally:
            writer.close()
            server.close()

    asyncio.run(run())
    assert len(proc.opened) == 1 and ("x-sidegate-phase", "upstream") in proc.opened[0] and proc.active == 0


def test_a_grpc_message_is_percent_encoded_and_cut_between_characters():
    block = h2c.trailers(h2c.INTERNAL, "a" * 117 + "é 100%", with_headers=True)
    headers = dict(Decoder().decode(block))
    assert headers[":status"] == "200" and headers["grpc-status"] == "13"
    assert headers["grpc-message"] == "a" * 117  # "%C3%A9" would not fit whole: not half of it
    assert dict(Decoder().decode(h2c.trailers(h2c.INTERNAL, "é 100%")))["grpc-message"] == "%C3%A9 100%25"

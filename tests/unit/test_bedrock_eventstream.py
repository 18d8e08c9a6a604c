"""AWS event-stream framing: the encoder checked against botocore's decoder (the reference), the
incremental decoder fed in every split, and every malformation refused."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer

from sidegate.translate.codecs.bedrock.eventstream import (
    MAX_PAYLOAD_LENGTH,
    EventStreamDecoder,
    EventStreamError,
    encode_event,
    encode_exception,
    encode_frame,
)

_FRAMES = [
    encode_event("messageStart", b'{"role":"assistant","p":"abc"}'),
    encode_event(
        "contentBlockDelta", '{"contentBlockIndex":0,"delta":{"text":"h\u00e9llo \u2603"}}'.encode()
    ),
    encode_event("messageStop", b'{"stopReason":"end_turn"}'),
    encode_exception("throttlingException", b'{"message":"Too many requests"}'),
]


def _botocore(data: bytes) -> list[tuple[dict, bytes]]:
    buf = EventStreamBuffer()
    buf.add_data(data)
    return [(m.headers, m.payload) for m in buf]


def _ours(frames: list) -> list[tuple[dict, bytes]]:
    return [(f.headers, f.payload) for f in frames]


def test_encoder_matches_botocore_decoder():
    data = b"".join(_FRAMES)
    decoded = _botocore(data)
    assert _ours(EventStreamDecoder().feed(data)) == decoded
    assert decoded[0][0] == {
        ":event-type": "messageStart",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert decoded[3][0][":exception-type"] == "throttlingException"
    assert decoded[3][0][":message-type"] == "exception"


def test_every_header_type_round_trips():
    u = uuid.uuid4().bytes
    frame = encode_frame(
        {"t": True, "f": False, "i": -7, "big": 2**40, "s": "x\u00e9", "b": b"\x00\x01"}, b"payload"
    )
    # byte/short/timestamp/uuid types are not produced by the encoder: hand-build them.
    extra = (
        b"\x01a\x02" + struct.pack("!b", -3) + b"\x01c\x03" + struct.pack("!h", 300)
        + b"\x01d\x08" + struct.pack("!q", 1700000000000) + b"\x01e\x09" + u
    )  # fmt: skip
    total = 16 + len(extra)
    prelude = struct.pack("!II", total, len(extra))
    body = prelude + struct.pack("!I", zlib.crc32(prelude)) + extra
    frame2 = body + struct.pack("!I", zlib.crc32(body))
    got = _ours(EventStreamDecoder().feed(frame + frame2))
    assert got == _botocore(frame + frame2)
    assert got[0] == (
        {"t": True, "f": False, "i": -7, "big": 2**40, "s": "x\u00e9", "b": b"\x00\x01"},
        b"payload",
    )
    assert got[1] == ({"a": -3, "c": 300, "d": 1700000000000, "e": u}, b"")


def test_frames_split_at_every_byte():
    data = b"".join(_FRAMES)
    expected = _ours(EventStreamDecoder().feed(data))
    for cut in range(1, len(data)):
        dec = EventStreamDecoder()
        got = dec.feed(data[:cut]) + dec.feed(data[cut:])
        assert _ours(got) == expected, cut
        assert dec.pending == 0


def test_one_byte_at_a_time_and_empty_chunks():
    data = b"".join(_FRAMES)
    dec = EventStreamDecoder()
    got = []
    for i in range(len(data)):
        got += dec.feed(b"")
        got += dec.feed(data[i : i + 1])
    assert _ours(got) == _botocore(data)


def test_truncated_stream_leaves_pending_bytes():
    dec = EventStreamDecoder()
    assert len(dec.feed(_FRAMES[0] + _FRAMES[1][:-3])) == 1
    assert dec.pending == len(_FRAMES[1]) - 3


def test_repeated_header_blocks_are_parsed_once_and_equal():
    frames = EventStreamDecoder().feed(b"".join([_FRAMES[1]] * 3))
    assert frames[0].headers is frames[2].headers  # cached: read-only by contract


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda f: bytes([f[0] ^ 1]) + f[1:], id="prelude-crc"),
        pytest.param(lambda f: f[:-1] + bytes([f[-1] ^ 1]), id="message-crc"),
        pytest.param(lambda f: f[:20] + bytes([f[20] ^ 1]) + f[21:], id="header-bit"),
    ],
)
def test_corruption_is_refused(mutate):
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(mutate(_FRAMES[1]))


def _raw_frame(total: int, hlen: int, rest: bytes) -> bytes:
    prelude = struct.pack("!II", total, hlen)
    body = prelude + struct.pack("!I", zlib.crc32(prelude)) + rest
    return body + struct.pack("!I", zlib.crc32(body))


def test_impossible_lengths_are_refused_before_buffering():
    # total smaller than prelude + headers + crc
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(_raw_frame(10, 0, b"")[:12])
    # a payload past the protocol's limit: refused from its prelude alone
    huge = struct.pack("!II", MAX_PAYLOAD_LENGTH + 100, 0)
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(huge + struct.pack("!I", zlib.crc32(huge)))
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(b"HTTP/1.1 200 OK\r\n\r\n")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"\x01a\x0b", id="unknown-type"),
        pytest.param(b"\x05abc", id="name-overruns"),
        pytest.param(b"\x01a\x07\x00\x09ab", id="string-overruns"),
        pytest.param(b"\x01a\x00\x01a\x00", id="duplicate"),
        pytest.param(b"\x01a\x07\x00\x02\xff\xfe", id="bad-utf8"),
    ],
)
def test_malformed_headers_are_refused(headers: bytes):
    frame = _raw_frame(16 + len(headers), len(headers), headers)
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(frame)


def test_the_error_carries_the_frames_decoded_before_the_fault():
    bad = _FRAMES[1][:-1] + bytes([_FRAMES[1][-1] ^ 1])
    with pytest.raises(EventStreamError) as err:
        EventStreamDecoder().feed(_FRAMES[0] + bad + _FRAMES[2])
    assert _ours(err.value.frames) == _botocore(_FRAMES[0])


def test_boto3_parses_the_encoded_stream_as_converse_stream_events():
    """The Bedrock fake frames its answers with this encoder: boto3's own ConverseStream parsing
    reads them as Bedrock's (events by their member name, an exception frame raised as its type)."""
    import botocore.session
    from botocore.eventstream import EventStream
    from botocore.exceptions import EventStreamError as BotoStreamError
    from botocore.parsers import EventStreamJSONParser

    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model("ConverseStream").output_shape.members["stream"]

    class Raw:
        def stream(self):
            yield b"".join(_FRAMES)

        def close(self) -> None:
            pass

    events = EventStream(Raw(), shape, EventStreamJSONParser(), "ConverseStream")
    got = []
    with pytest.raises(BotoStreamError) as err:
        for event in events:
            got.append(event)
    assert got == [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "h\u00e9llo \u2603"}}},
        {"messageStop": {"stopReason": "end_turn"}},
    ]
    assert err.value.response["Error"] == {"Code": "throttlingException", "Message": "Too many requests"}

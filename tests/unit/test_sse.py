"""The incremental SSE parser and encoder."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from sidegate.sse import SseParser, encode_data, encode_event


def _parse(*chunks: bytes):
    p = SseParser()
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    return [(e.event, e.data) for e in out], p


def test_data_only_and_named_events():
    events, _ = _parse(b'data: {"a":1}\n\nevent: ping\ndata: {}\n\n')
    assert events == [(None, b'{"a":1}'), ("ping", b"{}")]


def test_crlf_and_cr_line_endings():
    events, _ = _parse(b"event: x\r\ndata: 1\r\n\r\ndata: 2\r\rdata: 3\n\n")
    assert events == [("x", b"1"), (None, b"2"), (None, b"3")]


def test_crlf_split_between_cr_and_lf():
    events, p = _parse(b"data: 1\r\n\r", b"\ndata: 2\r", b"\n\r", b"\n")
    assert events == [(None, b"1"), (None, b"2")]
    assert not p.pending


def test_multiline_data_comments_and_fields():
    events, _ = _parse(b": comment\nid: 7\nretry: 10\ndata: a\ndata:b\ndata\nevent: e\nunknown: z\n\n")
    assert events == [("e", b"a\nb\n")]


def test_comment_only_block_dispatches_nothing():
    events, _ = _parse(b": keep-alive\n\n\n\ndata: x\n\n")
    assert events == [(None, b"x")]


def test_raw_bytes_of_each_event():
    p = SseParser()
    evs = p.feed(b"data: 1\n\nevent: e\ndata: 2\n\n")
    assert [e.raw for e in evs] == [b"data: 1\n\n", b"event: e\ndata: 2\n\n"]


def test_partial_event_is_pending_then_completed():
    p = SseParser()
    assert p.feed(b'data: {"t":"\xe2\x98') == []
    assert p.pending
    (ev,) = p.feed(b'\x83"}\n\n')
    assert ev.data.decode() == '{"t":"\u2603"}'
    assert not p.pending


def test_encoder_round_trip():
    assert encode_data(b"{}") == b"data: {}\n\n"
    assert encode_event("ping", b"{}") == b"event: ping\ndata: {}\n\n"
    assert encode_event(None, "a\nb") == b"data: a\ndata: b\n\n"
    events, _ = _parse(encode_event("m", "line1\nline2"))
    assert events == [("m", b"line1\nline2")]


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30
)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(st.tuples(st.none() | st.sampled_from(["a", "message_start"]), _TEXT), max_size=8),
    sep=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
)
def test_any_split_any_line_ending(items, sep, cuts):
    wire = b""
    for event, text in items:
        if event:
            wire += b"event: " + event.encode() + sep
        wire += b"data: " + text.encode() + sep + sep
    points = [0, *sorted({c for c in cuts if c <= len(wire)}), len(wire)]
    chunks = [wire[a:b] for a, b in itertools.pairwise(points)]
    p = SseParser()
    got = []
    for c in chunks:
        got.extend((e.event, e.data.decode()) for e in p.feed(c))
    if sep == b"\r" and wire.endswith(b"\r"):
        got.extend((e.event, e.data.decode()) for e in p.feed(b"x"))  # a lone trailing CR waits
    assert got == [(e, t) for e, t in items]

"""Restoring placeholders in responses: plain text, JSON bodies, split streams, client SSE streams."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sidegate.errors import Api
from sidegate.features.guard import SseRestorer, StreamRestorer, restore_body, restore_text
from sidegate.sse import SseParser

MAPPING = {
    "<EMAIL_1>": "jane@example.com",
    "<EMAIL_12>": "bob@example.org",
    "<PHONE_1>": "+44 20 7946 0958",
    "<SECRET_1>": 'line1\nline2 "quoted"',
}
TEXT = "Hi <EMAIL_1>, or <EMAIL_12>; call <PHONE_1>. Unknown <EMAIL_3> and <EM and a < b <SECRET_1>"


def test_restore_text() -> None:
    assert restore_text(TEXT, MAPPING) == (
        'Hi jane@example.com, or bob@example.org; call +44 20 7946 0958. Unknown <EMAIL_3> and <EM and a < b line1\nline2 "quoted"'
    )
    assert restore_text("no placeholders", MAPPING) == "no placeholders"
    assert restore_text(TEXT, {}) == TEXT


def _stream(pieces: list[str], mapping: dict[str, str] = MAPPING) -> str:
    r = StreamRestorer(mapping)
    return "".join(r.feed(p) for p in pieces) + r.flush()


def test_split_at_every_offset() -> None:
    want = restore_text(TEXT, MAPPING)
    for i in range(len(TEXT) + 1):
        assert _stream([TEXT[:i], TEXT[i:]]) == want
        for j in range(i, min(len(TEXT), i + 12) + 1):
            assert _stream([TEXT[:i], TEXT[i:j], TEXT[j:]]) == want


def test_one_char_at_a_time_and_bounded_hold() -> None:
    r = StreamRestorer(MAPPING)
    longest = max(map(len, MAPPING))
    out = []
    for ch in TEXT:
        out.append(r.feed(ch))
        assert len(r._held) < longest
    assert "".join(out) + r.flush() == restore_text(TEXT, MAPPING)


def test_text_without_lt_passes_straight_through() -> None:
    r = StreamRestorer(MAPPING)
    assert r.feed("plain text") == "plain text"
    assert not r.pending


_alphabet = st.sampled_from(
    ["a", " ", "<", ">", "_", "1", "E", "EMAIL", "<EMAIL_1>", "<EMAIL_12>", "<PHONE_1>", "<SECRET_1>"]
)


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.lists(_alphabet, max_size=12).map("".join), max_size=10))
def test_any_split_equals_whole(parts: list[str]) -> None:
    whole = "".join(parts)
    assert _stream(parts) == restore_text(whole, MAPPING)


@settings(max_examples=100, deadline=None)
@given(text=st.lists(_alphabet, max_size=30).map("".join), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_any_cut_points_equal_whole(text: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert _stream(pieces) == restore_text(text, MAPPING)


def test_restore_body_openai_and_arguments_stay_json() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "content": "Mail <EMAIL_1>",
                    "tool_calls": [{"function": {"name": "f", "arguments": '{"k": "<SECRET_1>"}'}}],
                }
            }
        ]
    }
    out = orjson.loads(restore_body(orjson.dumps(body), MAPPING))
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Mail jane@example.com"
    assert orjson.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"k": MAPPING["<SECRET_1>"]}


def test_restore_body_anthropic_and_untouched_bytes() -> None:
    body = {
        "content": [
            {"type": "text", "text": "<PHONE_1>"},
            {"type": "tool_use", "input": {"to": "<EMAIL_12>"}},
        ]
    }
    out = orjson.loads(restore_body(orjson.dumps(body), MAPPING))
    assert out["content"][0]["text"] == MAPPING["<PHONE_1>"]
    assert out["content"][1]["input"] == {"to": "bob@example.org"}
    raw = b'{"content":[{"type":"text","text":"a < b"}]}'
    assert restore_body(raw, MAPPING) is raw


# --- client-format SSE streams ---------------------------------------------------------------------


def _split_every(s: str, n: int) -> list[str]:
    return [s[i : i + n] for i in range(0, len(s), n)]


def _openai_stream(text: str, args: str, n: int) -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = []
    for piece in _split_every(text, n):
        out.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    for piece in _split_every(args, n):
        call = {"index": 0, "function": {"arguments": piece}}
        out.append(
            {**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
        )
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in out) + b"data: [DONE]\n\n"


def _collect_openai(stream: bytes) -> tuple[str, str, bool]:
    text, args, done = "", "", False
    for ev in SseParser().feed(stream):
        if ev.data == b"[DONE]":
            done = True
            continue
        delta = orjson.loads(ev.data)["choices"][0]["delta"]
        text += delta.get("content") or ""
        for call in delta.get("tool_calls") or []:
            args += call["function"].get("arguments", "")
    return text, args, done


def test_sse_openai_restores_split_placeholders() -> None:
    text = "Mail <EMAIL_1> or call <PHONE_1> now <EM"
    args = orjson.dumps({"k": "<SECRET_1>", "e": "<EMAIL_12>"}).decode()
    for n in range(1, 12):
        stream = _openai_stream(text, args, n)
        for chunk in (3, 17, len(stream)):
            r = SseRestorer(Api.OPENAI, MAPPING)
            out = b"".join(r.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)) + r.finish()
            got_text, got_args, done = _collect_openai(out)
            assert got_text == restore_text(text, MAPPING)
            assert orjson.loads(got_args) == {"k": MAPPING["<SECRET_1>"], "e": "bob@example.org"}
            assert done


def test_sse_openai_releases_held_text_without_finish_reason() -> None:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunk = {**base, "choices": [{"index": 0, "delta": {"content": "tail <EMAIL_"}, "finish_reason": None}]}
    stream = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    r = SseRestorer(Api.OPENAI, MAPPING)
    text, _, done = _collect_openai(r.feed(stream) + r.finish())
    assert text == "tail <EMAIL_" and done


def _anthropic_stream(text: str, partial: str, n: int) -> bytes:
    evs: list[dict] = [
        {"type": "message_start", "message": {"id": "m", "content": []}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    evs += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        for p in _split_every(text, n)
    ]
    evs.append({"type": "content_block_stop", "index": 0})
    evs.append(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        }
    )
    evs += [
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": p}}
        for p in _split_every(partial, n)
    ]
    evs.append({"type": "content_block_stop", "index": 1})
    evs.append({"type": "message_stop"})
    return b"".join(f"event: {e['type']}\n".encode() + b"data: " + orjson.dumps(e) + b"\n\n" for e in evs)


def test_sse_anthropic_restores_split_placeholders() -> None:
    text = "Mail <EMAIL_1>, phone <PHONE_1> <EMAIL_1"
    partial = orjson.dumps({"k": "<SECRET_1>"}).decode()
    for n in range(1, 10):
        stream = _anthropic_stream(text, partial, n)
        r = SseRestorer(Api.ANTHROPIC, MAPPING)
        out = b"".join(r.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + r.finish()
        got_text, got_json, order = "", "", []
        for ev in SseParser().feed(out):
            obj = orjson.loads(ev.data)
            assert ev.event == obj["type"]
            order.append(obj["type"])
            if obj["type"] == "content_block_delta":
                d = obj["delta"]
                got_text += d.get("text", "")
                got_json += d.get("partial_json", "")
        assert got_text == restore_text(text, MAPPING)
        assert orjson.loads(got_json) == {"k": MAPPING["<SECRET_1>"]}
        assert order[-1] == "message_stop"
        # the released tail comes before its block's stop event
        stop0 = order.index("content_block_stop")
        assert order[stop0 - 1] == "content_block_delta"


def test_sse_passthrough_is_byte_exact_without_placeholders() -> None:
    stream = _anthropic_stream("no placeholders here", '{"a": 1}', 5)
    r = SseRestorer(Api.ANTHROPIC, MAPPING)
    assert r.feed(stream) + r.finish() == stream
    r = SseRestorer(Api.ANTHROPIC, {})
    assert r.feed(b"anything") == b"anything"

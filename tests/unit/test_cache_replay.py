"""Replay of cached responses (JSON and SSE, checked with the official SDK types) and SSE reassembly."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from sidegate.errors import Api
from sidegate.features.cache import json_answer, reassemble, replay_answer, sse_answer
from sidegate.sse import SseParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_helpers import anthropic_response, anthropic_tool_response, openai_response, openai_tool_response

ANTHROPIC_EVENT = TypeAdapter(RawMessageStreamEvent)


def _events(stream: bytes):
    return SseParser().feed(stream)


def _without_id(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("id", "created")}


OPENAI_CASES = [
    openai_response(),
    openai_tool_response(),
    openai_response(finish="length", choices=[
        {"index": 0, "message": {"role": "assistant", "content": "A", "refusal": None}, "logprobs": None,
         "finish_reason": "length"},
        {"index": 1, "message": {"role": "assistant", "content": "B", "refusal": None}, "logprobs": None,
         "finish_reason": "stop"},
    ]),
]  # fmt: skip
ANTHROPIC_CASES = [
    anthropic_response(),
    anthropic_tool_response(),
    anthropic_response(text="naïve — ünïcode 😀"),
]


@pytest.mark.parametrize("resp", OPENAI_CASES)
@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_sse_replay_parses_and_round_trips(resp, include_usage):
    stream = sse_answer(Api.OPENAI, resp, include_usage)
    events = _events(stream)
    assert events[-1].data == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(e.data)) for e in events[:-1]]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id != resp["id"]
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 22
        assert all(c.usage is None for c in chunks[:-1])
    back = reassemble(Api.OPENAI, stream)
    ChatCompletion.model_validate(back)
    expected = _without_id(resp)
    if not include_usage:
        expected.pop("usage")
    assert _without_id(back) == expected


@pytest.mark.parametrize("resp", ANTHROPIC_CASES)
def test_anthropic_sse_replay_parses_and_round_trips(resp):
    stream = sse_answer(Api.ANTHROPIC, resp)
    events = _events(stream)
    parsed = [ANTHROPIC_EVENT.validate_python(orjson.loads(e.data)) for e in events]
    assert [e.event for e in events] == [p.type for p in parsed]
    assert parsed[0].type == "message_start" and parsed[-1].type == "message_stop"
    assert parsed[0].message.id.startswith("msg_") and parsed[0].message.id != resp["id"]
    back = reassemble(Api.ANTHROPIC, stream)
    Message.model_validate(back)
    assert _without_id(back) == _without_id(resp)


def test_json_replay_fresh_id_same_content():
    for api, resp, model in (
        (Api.OPENAI, openai_response(), ChatCompletion),
        (Api.ANTHROPIC, anthropic_response(), Message),
    ):
        a = orjson.loads(json_answer(api, resp))
        b = orjson.loads(json_answer(api, resp))
        model.model_validate(a)
        assert a["id"] != b["id"] != resp["id"]
        assert _without_id(a) == _without_id(resp)
    body, ctype = replay_answer(Api.OPENAI, openai_response(), stream=True)
    assert ctype == "text/event-stream" and body.endswith(b"data: [DONE]\n\n")
    body, ctype = replay_answer(Api.ANTHROPIC, anthropic_response(), stream=False)
    assert ctype == "application/json"


def _provider_openai_stream() -> bytes:
    """A stream shaped like api.openai.com's: split content, tool-call arguments in pieces, usage chunk."""
    base = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "usage": None,
    }

    def c(delta, finish=None):
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    chunks = [
        c({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get", "arguments": ""}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        c({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "put", "arguments": "{}"}}]}),
        c({}, "tool_calls"),
        {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}},
    ]  # fmt: skip
    return b"".join(b"data: " + orjson.dumps(x) + b"\r\n\r\n" for x in chunks) + b"data: [DONE]\r\n\r\n"


def test_reassemble_openai_tool_call_stream():
    out = reassemble(Api.OPENAI, _provider_openai_stream())
    ChatCompletion.model_validate(out)
    msg = out["choices"][0]["message"]
    assert msg["content"] is None
    assert [t["function"]["arguments"] for t in msg["tool_calls"]] == ['{"city":"Paris"}', "{}"]
    assert [t["id"] for t in msg["tool_calls"]] == ["call_a", "call_b"]
    assert out["choices"][0]["finish_reason"] == "tool_calls" and out["usage"]["total_tokens"] == 12


def test_reassemble_anthropic_split_json_and_ping():
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude",
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "get", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "[1, 2]}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 30}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    stream = b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for n, d in events)
    out = reassemble(Api.ANTHROPIC, stream)
    Message.model_validate(out)
    assert out["content"][0] == {"type": "text", "text": "Hello"}
    assert out["content"][1]["input"] == {"a": [1, 2]}
    assert out["usage"] == {"input_tokens": 9, "output_tokens": 30}
    assert out["stop_reason"] == "tool_use"
    # Cut before message_stop -> incomplete -> nothing to cache.
    cut = stream[: stream.index(b"event: message_stop")]
    assert reassemble(Api.ANTHROPIC, cut) is None
    err = cut + b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n'
    assert reassemble(Api.ANTHROPIC, err) is None


def test_reassemble_openai_incomplete_or_broken():
    full = sse_answer(Api.OPENAI, openai_response())
    assert reassemble(Api.OPENAI, full.replace(b"data: [DONE]\n\n", b"")) is None
    assert reassemble(Api.OPENAI, b"data: {not json}\n\ndata: [DONE]\n\n") is None
    assert reassemble(Api.OPENAI, b'data: {"error":{"message":"x"}}\n\n') is None
    assert reassemble(Api.OPENAI, b"") is None

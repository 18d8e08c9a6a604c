"""The Responses API codecs (sidegate/translate/codecs/responses/) and passthrough, beyond the
golden fixtures: what the official ``openai`` SDK makes of every answer and stream the gateway
produces for a Responses client, the echo of the request, and the passthrough's stream handling."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import translate_helpers as h

from sidegate.errors import Api
from sidegate.translate import get_translator
from sidegate.translate.base import TranslateOptions, Usage
from sidegate.translate.codecs.form import END, Failure, Start, Stop, TextDelta, UsageUpdate
from sidegate.translate.codecs.responses.stream import ResponsesStreamEncoder
from sidegate.translate.responses_responses import ResponsesResponsesStream

CLIENT_PAIRS = ("responses_anthropic", "responses_openai")


class _Weather(BaseModel):
    model_config = {"extra": "forbid"}
    city: str


ANSWERS = [c for c in h.cases("expected_response.json") if c.parent.name in CLIENT_PAIRS]
STREAMS = [c for c in h.cases("expected_stream.sse") if c.parent.name in CLIENT_PAIRS]


def _client(body: bytes, content_type: str) -> openai.OpenAI:
    """An SDK client whose every request is answered with ``body`` (the gateway's output)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", http_client=http, max_retries=0)


@pytest.mark.parametrize("case", ANSWERS, ids=h.case_id)
def test_sdk_parses_every_answer(case: Path):
    body = (case / "expected_response.json").read_bytes()
    resp = _client(body, "application/json").responses.create(model="m", input="hi")
    expected = orjson.loads(body)
    assert resp.id == expected["id"] and resp.status == expected["status"]
    texts = [p["text"] for i in expected["output"] if i["type"] == "message" for p in i["content"]]
    assert resp.output_text == "".join(texts)
    assert resp.usage is not None and resp.usage.total_tokens == expected["usage"]["total_tokens"]


@pytest.mark.parametrize("case", STREAMS, ids=h.case_id)
def test_sdk_accumulates_every_stream(case: Path):
    """``client.responses.stream`` runs the SDK's own accumulation (which checks item identities,
    output indexes and that every item is finished before ``response.completed``)."""
    data = (case / "expected_stream.sse").read_bytes()
    terminal = h.sse_events(data)[-1][0]
    client = _client(data, "text/event-stream")
    if terminal == "response.completed":
        with client.responses.stream(model="m", input="hi") as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
        assert final.output_text == "".join(deltas)
        done = orjson.loads(h.sse_events(data)[-1][1])["response"]
        assert final.model_dump(mode="json", exclude_none=True)["output"] == [
            _without_none(item) for item in done["output"]
        ]
    elif terminal == "response.incomplete":  # the SDK hands it out as the last event (no final response)
        with client.responses.stream(model="m", input="hi") as stream:
            events = list(stream)
        final = events[-1].response  # type: ignore[union-attr]
        assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
        done = orjson.loads(h.sse_events(data)[-1][1])["response"]
        assert final.model_dump(mode="json", exclude_none=True)["output"] == [
            _without_none(item) for item in done["output"]
        ]
    else:  # a failed stream: the SDK raises its API error on the `error` event
        assert terminal == "response.failed"
        with pytest.raises(openai.APIError), client.responses.stream(model="m", input="hi") as stream:
            for _ in stream:
                pass


def _without_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_without_none(v) for v in obj]
    return obj


def test_answer_echoes_the_request():
    case = h.FIXTURES / "responses_anthropic" / "resp_tool_use"
    request = orjson.loads(
        (h.FIXTURES / "responses_anthropic" / "req_tools_round_trip" / "request.json").read_bytes()
    )
    request["temperature"] = 0.2
    tr = h.make_translator("responses_anthropic")
    body, _ = tr.response((case / "response.json").read_bytes(), request=request)  # type: ignore[call-arg]
    out = orjson.loads(body)
    assert out["tools"] == request["tools"] and out["tool_choice"] == request["tool_choice"]
    assert out["parallel_tool_calls"] is False and out["temperature"] == 0.2
    h.validate_response(Api.RESPONSES, out)
    st = tr.stream(client_wants_usage=False, request=request)  # type: ignore[call-arg]
    data = st.feed((h.FIXTURES / "responses_anthropic" / "stream_text_usage" / "stream.sse").read_bytes())
    created = orjson.loads(h.sse_events(data)[0][1])
    assert created["response"]["tools"] == request["tools"]


def test_ids_and_created_at_come_from_the_factories():
    tr = get_translator(Api.RESPONSES, Api.ANTHROPIC)
    raw = (h.FIXTURES / "responses_anthropic" / "resp_tool_use" / "response.json").read_bytes()
    one, two = (orjson.loads(tr.response(raw)[0]) for _ in range(2))
    assert one["id"].startswith("resp_") and one["id"] != two["id"]
    assert {i["id"][:3] for i in one["output"]} <= {"msg", "fc_", "rs_"}
    assert one["created_at"] > 1_700_000_000


def test_error_statuses_for_responses_clients():
    tr = get_translator(Api.RESPONSES, Api.ANTHROPIC)
    status, body = tr.error(
        529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    )
    assert status == 503
    assert orjson.loads(body)["error"]["message"] == "Overloaded"


def test_encoder_failure_before_any_event_still_opens_the_response():
    enc = ResponsesStreamEncoder(created=1, ids=h.fixed_ids())
    events = h.sse_events(enc.encode([Failure("boom", "rate_limit")]))
    assert [e for e, _ in events] == ["response.created", "response.in_progress", "error", "response.failed"]
    err = orjson.loads(events[2][1])
    assert (
        err["message"] == "boom"
        and err["code"] == "rate_limit_exceeded"
        and err["error"]["message"] == "boom"
    )
    assert [orjson.loads(d)["sequence_number"] for _, d in events] == [0, 1, 2, 3]
    assert enc.encode([TextDelta("late")]) == b""  # nothing after the terminal event
    h.validate_stream(Api.RESPONSES, b"".join(encode_event_pairs(events)))


def encode_event_pairs(events: list[tuple[str | None, bytes]]) -> list[bytes]:
    return [f"event: {e}\ndata: ".encode() + d + b"\n\n" for e, d in events]


def test_encoder_is_event_by_event():
    """Each form event is on the wire as soon as it is encoded: nothing is held back."""
    enc = ResponsesStreamEncoder(created=1, ids=h.fixed_ids())
    assert b"response.created" in enc.encode([Start("m1", "model")])
    assert b'"delta":"Hi"' in enc.encode([TextDelta("Hi")])
    assert b'"delta":" there"' in enc.encode([TextDelta(" there")])
    assert enc.encode([Stop("end", None), UsageUpdate(Usage(3, 2), None)]) == b""
    tail = enc.encode([END])
    assert b"response.output_text.done" in tail and b"response.completed" in tail


# ------------------------------------------------------------------------------------ passthrough

_COMPLETED = (h.FIXTURES / "responses_responses" / "stream_text" / "stream.sse").read_bytes()


def test_passthrough_request_rewrites_only_the_model():
    tr = get_translator(Api.RESPONSES, Api.RESPONSES)
    body = {"model": "a", "input": "hi", "tools": [{"type": "web_search"}], "previous_response_id": None}
    req = tr.request(body, model="b", opts=TranslateOptions())
    assert req.path == "/v1/responses" and orjson.loads(req.body) == {**body, "model": "b"}
    same = tr.request({"model": "b", "input": "x"}, model="b", opts=TranslateOptions())
    assert same.body == b'{"model":"b","input":"x"}'


def test_passthrough_stream_bytes_untouched_and_usage_read():
    st = ResponsesResponsesStream()
    out = b"".join(st.feed(_COMPLETED[i : i + 97]) for i in range(0, len(_COMPLETED), 97)) + st.finish()
    assert out == _COMPLETED
    assert st.usage == Usage(25, 4, 10, 0) and st.done


def test_passthrough_stream_without_event_lines():
    data = b"".join(b"data: " + d + b"\n\n" for _, d in h.sse_events(_COMPLETED))
    st = ResponsesResponsesStream()
    assert st.feed(data) == data and st.finish() == b""
    assert st.usage == Usage(25, 4, 10, 0)


def test_passthrough_truncated_and_malformed_streams_end_with_an_error_event():
    events = h.sse_events(_COMPLETED)
    head = encode_event_pairs(events[:3])
    st = ResponsesResponsesStream()
    out = st.feed(b"".join(head) + b'event: response.output_text.delta\ndata: {"ty')
    tail = st.finish()
    err = orjson.loads(h.sse_events(tail)[0][1])
    assert out == b"".join(head) and err["type"] == "error" and err["sequence_number"] == 3
    st = ResponsesResponsesStream()
    out = st.feed(b"".join(head) + b"event: response.output_text.delta\ndata: garbage\n\n")
    assert orjson.loads(h.sse_events(out)[-1][1])["message"].startswith("The provider sent a malformed")
    assert st.done and st.finish() == b""
    client = _client(out, "text/event-stream")
    with pytest.raises(openai.APIError), client.responses.stream(model="m", input="hi") as stream:
        for _ in stream:  # the SDK raises on the error event
            pass


def test_passthrough_nothing_after_the_terminal_event():
    st = ResponsesResponsesStream()
    assert st.feed(_COMPLETED + b"event: response.in_progress\ndata: {}\n\n") == _COMPLETED


def test_every_responses_pair_is_registered():
    for inbound, upstream in h.RESPONSES_PAIRS.values():
        tr = get_translator(inbound, upstream)
        assert (tr.inbound, tr.upstream) == (inbound, upstream)
        assert get_translator(inbound.value, upstream.value) is tr


def test_sdk_parses_structured_output_and_function_calls():
    """``responses.parse`` with a ``text_format`` and a strict function tool: what structured
    output and agent frameworks read from the gateway's answers and streams."""

    class Person(BaseModel):
        name: str
        age: int

    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [
            {"type": "text", "text": '{"name":"Ann","age":30}'},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 9},
    }
    tool = openai.pydantic_function_tool(_Weather, name="get_weather")
    request = {"model": "m", "input": "x", "tools": [tool]}
    tr = h.make_translator("responses_anthropic")
    body, _ = tr.response(orjson.dumps(answer), request=request)  # type: ignore[call-arg]
    client = _client(body, "application/json")
    parsed = client.responses.parse(model="m", input="x", text_format=Person, tools=[tool])  # type: ignore[list-item]
    assert parsed.output_parsed == Person(name="Ann", age=30)
    call = next(i for i in parsed.output if i.type == "function_call")
    assert call.parsed_arguments == _Weather(city="Paris")  # type: ignore[union-attr]

    events = [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
        b'"role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,'
        b'"usage":{"input_tokens":5,"output_tokens":1}}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"{\\"name\\":\\"Ann\\","}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"\\"age\\":30}"}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
        b'"stop_sequence":null},"usage":{"output_tokens":9}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
    st = h.make_translator("responses_anthropic").stream(client_wants_usage=False)
    data = b"".join(st.feed(e) for e in events) + st.finish()
    with _client(data, "text/event-stream").responses.stream(
        model="m", input="x", text_format=Person
    ) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Person(name="Ann", age=30)
    assert final.usage is not None and final.usage.output_tokens == 9


def test_input_items_merge_into_turns():
    """A turn's assistant items (text, reasoning, calls) are one assistant message and its tool
    outputs one user message, as Chat Completions needs; a user's own text stays its own turn."""
    from sidegate.translate.codecs.form import Text, ToolCall, ToolResult
    from sidegate.translate.codecs.responses.items import decode_input

    call = {"type": "function_call", "name": "f", "arguments": "{}"}
    msgs = decode_input(
        [
            {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
            {"role": "assistant", "content": "a"},
            {**call, "call_id": "1"},
            {**call, "call_id": "2"},
            {"type": "function_call_output", "call_id": "1", "output": "r1"},
            {"type": "function_call_output", "call_id": "2", "output": "r2"},
            {"role": "user", "content": [{"type": "input_text", "text": "more"}]},
            {"type": "function_call_output", "call_id": "3", "output": "r3"},
        ]
    )
    shapes = [(m.role, [type(p) for p in m.content]) for m in msgs]
    assert shapes == [
        ("user", [Text]),
        ("assistant", [Text, ToolCall, ToolCall]),
        ("user", [ToolResult, ToolResult]),
        ("user", [Text]),
        ("user", [ToolResult]),
    ]

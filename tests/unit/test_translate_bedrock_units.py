"""The Bedrock (Converse) codec's behaviour beyond the golden fixtures: stream edge cases (frames
cut, corrupted, protocol errors), one JSON parse per event, message shaping rules, AWS errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator
from sidegate.translate.codecs.bedrock import request as bedrock_request
from sidegate.translate.codecs.bedrock import response as bedrock_response
from sidegate.translate.codecs.bedrock.eventstream import encode_event, encode_exception, encode_frame
from sidegate.translate.codecs.form import (
    End,
    Failure,
    Message,
    Request,
    Stop,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolResult,
    UsageUpdate,
)
from sidegate.translate.common import MALFORMED_EVENT, STREAM_TRUNCATED, client_error, parse_provider_error


def _ev(name: str, obj: dict[str, Any]) -> bytes:
    return encode_event(name, orjson.dumps(obj))


_HAPPY = [
    _ev("messageStart", {"role": "assistant"}),
    _ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    _ev("contentBlockStop", {"contentBlockIndex": 0}),
    _ev("messageStop", {"stopReason": "end_turn"}),
    _ev("metadata", {"usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}, "metrics": {}}),
]


def _decode(*chunks: bytes) -> tuple[list[Any], bedrock_response.BedrockStreamDecoder]:
    dec = bedrock_response.StreamDecoder()
    events = [e for c in chunks for e in dec.feed(c)]
    return events + dec.finish(), dec


def _kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_happy_stream_ends_once_and_ignores_what_follows():
    events, dec = _decode(b"".join(_HAPPY), _HAPPY[1])
    assert _kinds(events) == ["Start", "TextDelta", "Stop", "UsageUpdate", "End"]
    assert dec.usage is not None and dec.usage.input_tokens == 3
    assert dec.feed(b"".join(_HAPPY)) == [] and dec.finish() == []


def test_frame_cut_mid_way_is_a_truncation():
    events, _ = _decode(b"".join(_HAPPY)[:-10])
    assert isinstance(events[-1], Failure) and events[-1].message == STREAM_TRUNCATED
    assert not any(isinstance(e, End) for e in events)


def test_corrupted_frame_ends_the_stream_with_a_failure_after_the_good_ones():
    bad = bytearray(_HAPPY[1])
    bad[-1] ^= 0xFF  # message CRC
    events, _ = _decode(_HAPPY[0] + bytes(bad) + _HAPPY[2])
    assert _kinds(events) == ["Start", "Failure"]
    assert events[-1].message == MALFORMED_EVENT


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b""])
def test_a_payload_that_is_not_an_object_is_malformed(payload: bytes):
    events, _ = _decode(_HAPPY[0] + encode_event("contentBlockDelta", payload))
    assert isinstance(events[-1], Failure) and events[-1].message == MALFORMED_EVENT


def test_protocol_error_frame_carries_its_message():
    frame = encode_frame(
        {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b""
    )
    events, _ = _decode(_HAPPY[0], frame)
    assert isinstance(events[-1], Failure) and (events[-1].message, events[-1].kind) == ("boom", "server")


@pytest.mark.parametrize(
    ("etype", "kind"),
    [
        ("throttlingException", "rate_limit"),
        ("validationException", "invalid_request"),
        ("modelStreamErrorException", "server"),
        ("internalServerException", "server"),
        ("serviceUnavailableException", "server"),
        ("somethingNew", "server"),
    ],
)
def test_exception_frames_map_to_failure_kinds(etype: str, kind: str):
    events, _ = _decode(_HAPPY[0], encode_exception(etype, b'{"message":"nope"}'))
    assert isinstance(events[-1], Failure) and (events[-1].message, events[-1].kind) == ("nope", kind)
    events, _ = _decode(encode_exception(etype, b"{}"))
    assert etype in events[-1].message  # no message: the exception's type still says what failed


def test_stray_tool_delta_and_unknown_events_are_ignored():
    events, _ = _decode(
        _HAPPY[0],
        _ev("contentBlockDelta", {"contentBlockIndex": 5, "delta": {"toolUse": {"input": "{}"}}}),
        _ev("somethingNew", {"x": 1}),
        *_HAPPY[1:],
    )
    assert _kinds(events) == ["Start", "TextDelta", "Stop", "UsageUpdate", "End"]


def test_one_json_parse_per_frame(monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = orjson.loads

    class Counting:
        JSONDecodeError = orjson.JSONDecodeError

        @staticmethod
        def loads(data: Any) -> Any:
            calls.append(1)
            return real(data)

    monkeypatch.setattr(bedrock_response, "orjson", Counting)
    _decode(b"".join(_HAPPY))
    assert len(calls) == len(_HAPPY)


def test_usage_counts_cache_reads_and_writes_as_input():
    u = bedrock_response.parse_bedrock_usage(
        {"inputTokens": 10, "outputTokens": 5, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 7}
    )
    assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.cache_creation_tokens) == (117, 5, 100, 7)
    bad = bedrock_response.parse_bedrock_usage({"inputTokens": -1, "outputTokens": "x"})
    assert (bad.input_tokens, bad.output_tokens) == (0, 0)
    assert bedrock_response.parse_bedrock_usage(None).total_tokens == 0


def test_metadata_without_message_stop_keeps_usage_but_fails():
    events, dec = _decode(_HAPPY[0], _HAPPY[1], _HAPPY[4])
    assert isinstance(events[-2], UsageUpdate) and isinstance(events[-1], Failure)
    assert dec.usage is not None and dec.usage.output_tokens == 1


def test_stop_sequence_is_read_from_model_fields():
    events, _ = _decode(
        _ev(
            "messageStop",
            {"stopReason": "stop_sequence", "additionalModelResponseFields": {"stop_sequence": "##"}},
        )
    )
    stop = next(e for e in events if isinstance(e, Stop))
    assert (stop.reason, stop.sequence) == ("stop_sequence", "##")


# ------------------------------------------------------------------------------------- requests


def _req(messages: list[Message], **kw: Any) -> Request:
    return Request(Api.OPENAI, messages, lambda extras: None, **kw)


def _encode(req: Request, model: str = "m") -> dict[str, Any]:
    return orjson.loads(bedrock_request.encode_request(req, model, TranslateOptions()).body)


def test_turns_merge_system_hoists_and_empty_turns_drop():
    body = _encode(
        _req(
            [
                Message("user", "a"),
                Message("system", "rule one"),
                Message("user", [Text("b")]),
                Message("assistant", ""),
                Message("assistant", [Text(""), ToolCall("t1", "f", {"x": 1})]),
                Message("user", [ToolResult("t1", "ok")]),
                Message("system", [Text(""), Text("rule two")]),
            ],
            tools=[Tool("f", None, {})],
        )
    )
    assert body["system"] == [{"text": "rule one"}, {"text": "rule two"}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [{"text": "a"}, {"text": "b"}]
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"x": 1}}}
    ]


def test_tool_history_without_tools_is_refused_in_client_terms():
    with pytest.raises(GatewayError) as err:
        _encode(_req([Message("user", "a"), Message("assistant", [ToolCall("t1", "f", {})])]))
    assert (err.value.status, err.value.param) == (400, "tools")


def test_an_empty_tool_output_is_an_empty_content_list():
    messages = [Message("user", [ToolResult("t1", ""), ToolResult("t2", "x", is_error=True)])]
    body = _encode(_req(messages, tools=[Tool("f", None, {})]))
    assert body["messages"][0]["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": []}},
        {"toolResult": {"toolUseId": "t2", "content": [{"text": "x"}], "status": "error"}},
    ]


def test_model_ids_and_arns_are_quoted_whole():
    arn = "arn:aws:bedrock:eu-west-1:1:application-inference-profile/abc 1"
    preq = bedrock_request.encode_request(_req([Message("user", "x")], stream=True), arn, TranslateOptions())
    assert (
        preq.path
        == "/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A1%3Aapplication-inference-profile%2Fabc%201/converse-stream"
    )
    assert b"modelId" not in preq.body and preq.headers == {"content-type": "application/json"}


def test_document_names_are_sanitised_or_numbered():
    from sidegate.translate.codecs.form import Document

    body = _encode(
        _req(
            [
                Message(
                    "user",
                    [
                        Document("application/pdf", "QQ==", title="a/b.c  [v2] (final)!"),
                        Document("application/pdf", "QQ=="),
                        Document("application/pdf", "QQ==", title="%%%"),
                        Text("read"),
                    ],
                )
            ]
        )
    )
    names = [b["document"]["name"] for b in body["messages"][0]["content"][:3]]
    assert names == ["a b c [v2] (final)", "document-2", "document-3"]


@pytest.mark.parametrize(
    ("key", "value", "ok"), [("temperature", 1, True), ("temperature", 1.01, False), ("top_p", -0.1, False)]
)
def test_sampling_bounds(key: str, value: float, ok: bool):
    req = _req([Message("user", "x")], **{key: value})
    if ok:
        assert _encode(req)["inferenceConfig"] == {key: value}
    else:
        with pytest.raises(GatewayError) as err:
            _encode(req)
        assert (err.value.status, err.value.param) == (400, key)


def test_reasoning_effort_needs_budgets():
    req = _req([Message("user", "x")], reasoning_effort="high")
    with pytest.raises(GatewayError) as err:
        bedrock_request.encode_request(req, "m", TranslateOptions(reasoning_budgets={}))
    assert err.value.param == "reasoning_effort"


def test_provider_only_directions_refuse_clearly():
    with pytest.raises(GatewayError) as err:
        bedrock_request.decode_request({})
    assert err.value.status == 400 and "provider API only" in err.value.message
    with pytest.raises(GatewayError):
        bedrock_response.encode_response(None, 0)  # type: ignore[arg-type]


def test_new_ids_differ():
    assert bedrock_response.new_id() != bedrock_response.new_id()
    assert bedrock_response.new_id().startswith("msg_bdrk_")


# --------------------------------------------------------------------------------------- errors


def test_aws_error_bodies_are_read():
    assert parse_provider_error(b'{"message":"slow down"}') == ("slow down", None)
    assert parse_provider_error(b'{"Message":"denied","__type":"AccessDeniedException"}') == (
        "denied",
        "AccessDeniedException",
    )


@pytest.mark.parametrize(("status", "expected"), [(424, 502), (408, 504), (429, 429), (503, 503)])
def test_aws_model_failures_are_the_gateway_status(status: int, expected: int):
    for api in (Api.OPENAI, Api.ANTHROPIC, Api.GEMINI):
        out, body = client_error(api, status, b'{"message":"m"}')
        assert out == expected and b'"m"' in body
    out, _ = get_translator(Api.RESPONSES, Api.BEDROCK).error(status, b'{"message":"m"}')
    assert out == expected


def test_text_deltas_keep_their_text():
    events, _ = _decode(
        _HAPPY[0], _ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "\u2603"}})
    )
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["\u2603"]


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES])
def test_answers_name_the_model_the_try_asked_for(inbound: Api) -> None:
    """Converse answers and events name no model: the client sees the provider-side model its try
    asked for, never an empty one."""
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    tx = get_translator(inbound, Api.BEDROCK)
    body = {"output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}  # fmt: skip
    out, _ = tx.response(orjson.dumps(body), model=model)
    assert orjson.loads(out)["model"] == model
    stream = tx.stream(client_wants_usage=True, model=model)
    text = b"".join(stream.feed(f) for f in _HAPPY) + stream.finish()
    assert model.encode() in text


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC])
def test_a_max_tokens_beyond_32_bits_is_the_clients_400(inbound: Api) -> None:
    """Converse's maxTokens is a 32-bit integer (found by the fuzz test: 2**63 + 1 went through)."""
    body = {"model": "m", "max_tokens": 2**63 + 1, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(GatewayError) as err:
        get_translator(inbound, Api.BEDROCK).request(body, model="x", opts=TranslateOptions())
    assert err.value.status == 400 and err.value.param == "max_tokens"

"""The Gemini codec's provider side, answers: Gemini bodies, SSE streams and Google's errors read
for OpenAI, Anthropic and Responses clients."""

from __future__ import annotations

import orjson
import pytest

from sidegate.errors import Api, GatewayError
from sidegate.translate import get_translator
from sidegate.translate.common import parse_provider_error, passthrough_error

# ----------------------------------------------------------------------------------- responses


def _answer(**kw) -> bytes:
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": kw.pop("parts", [{"text": "Hello"}])},
                "finishReason": kw.pop("finish", "STOP"),
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 18,
        },
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "resp1",
    }
    body.update(kw)
    return orjson.dumps(body)


def test_openai_response_usage_and_thoughts():
    out, usage = get_translator(Api.OPENAI, Api.GEMINI).response(
        _answer(parts=[{"text": "think", "thought": True}, {"text": "Hello"}])
    )
    obj = orjson.loads(out)
    assert obj["id"] == "resp1" and obj["model"] == "gemini-2.5-flash-001"
    assert obj["choices"][0]["message"]["content"] == "Hello"
    assert obj["choices"][0]["message"]["reasoning_content"] == "think"
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert obj["usage"]["completion_tokens"] == 8
    assert obj["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (10, 8, 4)


def test_function_calls_get_stable_ids():
    parts = [
        {"functionCall": {"name": "f", "args": {"a": 1}}},
        {"functionCall": {"id": "g1", "name": "g", "args": {}}},
    ]
    out, _ = get_translator(Api.ANTHROPIC, Api.GEMINI).response(_answer(parts=parts))
    obj = orjson.loads(out)
    assert obj["stop_reason"] == "tool_use"
    assert [(b["id"], b["name"], b["input"]) for b in obj["content"]] == [
        ("call_resp1_0", "f", {"a": 1}),
        ("g1", "g", {}),
    ]
    assert obj["usage"] == {
        "input_tokens": 6,
        "output_tokens": 8,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.parametrize("finish", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"])
def test_safety_finish_is_a_refusal(finish):
    out, _ = get_translator(Api.OPENAI, Api.GEMINI).response(_answer(parts=[], finish=finish))
    assert orjson.loads(out)["choices"][0]["finish_reason"] == "content_filter"
    out, _ = get_translator(Api.ANTHROPIC, Api.GEMINI).response(_answer(parts=[], finish=finish))
    assert orjson.loads(out)["stop_reason"] == "refusal"


def test_blocked_prompt_is_a_refusal():
    body = orjson.dumps(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}
    )
    out, usage = get_translator(Api.OPENAI, Api.GEMINI).response(body)
    assert orjson.loads(out)["choices"][0]["finish_reason"] == "content_filter"
    assert usage.input_tokens == 7
    out, _ = get_translator(Api.RESPONSES, Api.GEMINI).response(body)
    assert orjson.loads(out)["status"] in ("incomplete", "completed")


def test_no_candidates_no_reason_and_failures_are_502():
    with pytest.raises(GatewayError) as err:
        get_translator(Api.OPENAI, Api.GEMINI).response(b'{"usageMetadata": {}}')
    assert err.value.status == 502
    with pytest.raises(GatewayError) as err:
        get_translator(Api.OPENAI, Api.GEMINI).response(_answer(parts=[], finish="MALFORMED_FUNCTION_CALL"))
    assert err.value.status == 502 and "MALFORMED_FUNCTION_CALL" in err.value.message


def test_max_tokens_is_length():
    out, _ = get_translator(Api.OPENAI, Api.GEMINI).response(_answer(finish="MAX_TOKENS"))
    assert orjson.loads(out)["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------------------------- streams

_EV1 = b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],"modelVersion":"g","responseId":"r"}\r\n\r\n'
_EV2 = (
    b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"lo"},'
    b'{"functionCall":{"name":"f","args":{"a":1}}}]},"finishReason":"STOP","index":0}],'
    b'"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6},"modelVersion":"g","responseId":"r"}\r\n\r\n'
)


def test_stream_to_anthropic_byte_by_byte():
    st = get_translator(Api.ANTHROPIC, Api.GEMINI).stream(client_wants_usage=False)
    data = _EV1 + _EV2
    out = b"".join(st.feed(data[i : i + 1]) for i in range(len(data)))
    assert st.done  # the event with the finish reason and usage ends the answer: no wait for EOF
    assert st.finish() == b""
    text = out.decode()
    assert text.count("event: message_start") == 1
    assert '"text_delta","text":"Hel"' in text and '"text_delta","text":"lo"' in text
    assert '"type":"tool_use","id":"call_r_0","name":"f"' in text
    assert '"partial_json":"{\\"a\\":1}"' in text
    assert '"stop_reason":"tool_use"' in text
    assert text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert (st.usage.input_tokens, st.usage.output_tokens) == (4, 2)


def test_stream_to_openai_cut_is_an_error():
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=True)
    out = st.feed(_EV1) + st.finish()
    assert out.rstrip().endswith(b"}") and b'"error"' in out.split(b"\n\n")[-2]


def test_stream_error_event_is_terminal():
    st = get_translator(Api.ANTHROPIC, Api.GEMINI).stream(client_wants_usage=False)
    out = st.feed(
        _EV1 + b'data: {"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}\n\n' + _EV2
    )
    assert b'"type":"rate_limit_error","message":"slow down"' in out
    assert b'"lo"' not in out
    assert st.done and st.finish() == b""


def test_stream_safety_block_and_malformed():
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=False)
    out = (
        st.feed(b'data: {"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"responseId":"r"}\n\n')
        + st.finish()
    )
    assert b'"finish_reason":"content_filter"' in out and out.endswith(b"data: [DONE]\n\n")
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=False)
    out = st.feed(b"data: [1, 2]\n\n")
    assert b'"error"' in out and st.done


def test_stream_to_responses():
    st = get_translator(Api.RESPONSES, Api.GEMINI).stream(client_wants_usage=False)
    out = st.feed(_EV1 + _EV2) + st.finish()
    assert b"event: response.completed" in out
    assert b'"name":"f"' in out


# -------------------------------------------------------------------------------------- errors


GOOGLE_429 = b'{"error":{"code":429,"message":"Quota exceeded for model","status":"RESOURCE_EXHAUSTED"}}'


def test_parse_google_error():
    assert parse_provider_error(GOOGLE_429) == ("Quota exceeded for model", "RESOURCE_EXHAUSTED")


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES])
def test_google_errors_in_client_format(inbound):
    status, body = get_translator(inbound, Api.GEMINI).error(429, GOOGLE_429)
    obj = orjson.loads(body)
    assert status == 429 and obj["error"]["message"] == "Quota exceeded for model"
    assert obj["error"]["type"] == "rate_limit_error"


def test_passthrough_error_well_formedness():
    assert passthrough_error(Api.GEMINI, 429, GOOGLE_429) == (429, GOOGLE_429)
    status, body = passthrough_error(Api.GEMINI, 500, b'{"error":{"message":"x","status":"INTERNAL"}}')
    assert (status, orjson.loads(body)) == (
        500,
        {"error": {"code": 500, "message": "x", "status": "INTERNAL"}},
    )
    status, body = passthrough_error(Api.GEMINI, 503, b"<html>")
    assert orjson.loads(body)["error"]["status"] == "UNAVAILABLE"


def test_stream_end_waits_for_usage_after_the_finish():
    finish = b'data: {"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}],"responseId":"r"}\n\n'
    usage = b'data: {"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1},"responseId":"r"}\n\n'
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=True)
    out = st.feed(_EV1 + finish)
    assert not st.done and b"[DONE]" not in out
    out = st.feed(usage)
    assert st.done and out.endswith(b"data: [DONE]\n\n") and b'"completion_tokens":1' in out
    assert st.feed(_EV1) == b"" and st.finish() == b""
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=True)
    out = st.feed(_EV1 + finish) + st.finish()  # no usage ever: complete at the end of the connection
    assert out.endswith(b"data: [DONE]\n\n") and st.done


def test_google_shape_is_not_well_formed_for_other_passthroughs():
    status, body = passthrough_error(Api.OPENAI, 429, GOOGLE_429)
    assert status == 429
    assert orjson.loads(body)["error"] == {
        "message": "Quota exceeded for model",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }


def test_google_error_array_body():
    body = b"[" + GOOGLE_429 + b"]"
    assert parse_provider_error(body) == ("Quota exceeded for model", "RESOURCE_EXHAUSTED")
    assert parse_provider_error(b"[1]") == (None, None) and parse_provider_error(b"[") == (None, None)
    status, out = get_translator(Api.ANTHROPIC, Api.GEMINI).error(429, body)
    assert status == 429 and orjson.loads(out)["error"]["message"] == "Quota exceeded for model"


def test_malformed_usage_keeps_the_usage_so_far():
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=True)
    st.feed(b'data: {"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":{"promptTokenCount":4}}\n\n')
    st.feed(b'data: {"candidates":[{"content":{"parts":[{"text":"b"}]}}],"usageMetadata":"junk"}\n\n')
    assert st.usage.input_tokens == 4

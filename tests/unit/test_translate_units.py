"""Targeted translator behaviours not covered by a golden fixture."""

from __future__ import annotations

import orjson
import pytest

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator

O2A = get_translator(Api.OPENAI, Api.ANTHROPIC)
A2O = get_translator(Api.ANTHROPIC, Api.OPENAI)
OPASS = get_translator(Api.OPENAI, Api.OPENAI)
MSG = [{"role": "user", "content": "x"}]


def _req(tr, body, **opts):
    return orjson.loads(tr.request(body, model="m", opts=TranslateOptions(**opts)).body)


def test_xhigh_effort_uses_largest_budget_and_empty_budgets_refuse():
    out = _req(O2A, {"messages": MSG, "reasoning_effort": "xhigh"})
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    with pytest.raises(GatewayError) as err:
        _req(O2A, {"messages": MSG, "reasoning_effort": "low"}, reasoning_budgets={})
    assert err.value.param == "reasoning_effort"


def test_reasoning_with_tiny_max_tokens_is_refused():
    with pytest.raises(GatewayError) as err:
        _req(O2A, {"messages": MSG, "reasoning_effort": "high", "max_tokens": 1500})
    assert err.value.status == 400


def test_unsupported_content_parts_are_refused():
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(GatewayError):
        _req(O2A, {"messages": [{"role": "user", "content": [audio]}]})
    with pytest.raises(GatewayError):
        _req(O2A, {"messages": [{"role": "function", "name": "f", "content": "x"}]})
    bmp = {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}
    with pytest.raises(GatewayError):
        _req(O2A, {"messages": [{"role": "user", "content": [bmp]}]})


def test_pdf_file_part_becomes_document():
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
    }
    out = _req(O2A, {"messages": [{"role": "user", "content": [part]}]})
    assert out["messages"][0]["content"][0]["type"] == "document"


def test_invalid_tool_arguments_from_openai_provider_are_kept_raw():
    body = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{x"}}
                    ],
                },
            }
        ],
    }
    out, usage = A2O.response(orjson.dumps(body))
    block = orjson.loads(out)["content"][0]
    assert block["input"] == {"_raw_arguments": "{x"}
    assert usage is not None and usage.input_tokens == 0


def test_passthrough_strips_usage_riding_on_a_choices_chunk():
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    st = OPASS.stream(client_wants_usage=False)
    out = st.feed(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n") + st.finish()
    first = orjson.loads(out.split(b"\n\n")[0][6:])
    assert "usage" not in first and first["choices"][0]["finish_reason"] == "stop"
    assert st.usage is not None and st.usage.output_tokens == 2


def test_passthrough_request_does_not_touch_stream_options_when_not_streaming():
    out = _req(OPASS, {"model": "m", "messages": MSG})
    assert "stream_options" not in out


@pytest.mark.parametrize("status", [200, 302, 700])
def test_non_error_status_becomes_502(status):
    code, body = O2A.error(status, b"{}")
    assert code == 502
    assert orjson.loads(body)["error"]["type"] == "server_error"


def test_anthropic_client_keeps_529_and_openai_client_gets_503():
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert get_translator(Api.ANTHROPIC, Api.ANTHROPIC).error(529, body)[0] == 529
    assert O2A.error(529, body)[0] == 503


def test_anthropic_stream_without_event_lines_still_tracks_usage():
    st = get_translator(Api.ANTHROPIC, Api.ANTHROPIC).stream(client_wants_usage=True)
    st.feed(b'data: {"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}\n\n')
    st.feed(
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}\n\n'
    )
    st.feed(b'data: {"type":"message_stop"}\n\n')
    assert st.finish() == b""
    assert st.usage is not None and (st.usage.input_tokens, st.usage.output_tokens) == (7, 9)

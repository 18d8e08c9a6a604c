"""Minimal inputs the fuzz tests found that used to crash a translator (or slip past it), kept as
plain unit tests so they stay fixed without relying on hypothesis' example database."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from test_fuzz_translate_response import check_usage
from test_fuzz_translate_stream import run_stream
from translate_helpers import validate_error, validate_request, validate_response

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator

AN, OA = Api.ANTHROPIC, Api.OPENAI
_OA_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
_AN_BODY = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def _request(inbound: Api, upstream: Api, body: dict[str, Any]) -> dict[str, Any]:
    preq = get_translator(inbound, upstream).request(body, model="up", opts=TranslateOptions())
    return orjson.loads(preq.body)


# Each of these raised AttributeError/TypeError/ValueError, or produced a provider request the
# provider's SDK types reject; all must be a 400 naming the parameter.
OPENAI_BAD = [
    {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": 1}]}]},
    {"messages": [{"role": "assistant", "tool_calls": 1}]},
    {"messages": [{"role": "assistant", "tool_calls": [{"id": None, "function": {"name": "f"}}]}]},
    {"messages": [{"role": "system", "content": [{"type": "text", "text": None}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "file", "file": "x"}]}]},
    {"reasoning_effort": []},
    {"temperature": []},
    {"temperature": "hot"},
    {"top_p": []},
    {"top_k": 1.5},
    {"user": [None]},
    {"stop": [1]},
    {"stop": 5},
    {"max_tokens": True},
    {"tools": 5},
    {"tools": [{"type": "function", "function": "f"}]},
    {"tools": [{"type": "function", "function": {"name": 1}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
    {
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": 1},
    },
    {"response_format": {"type": "json_schema", "json_schema": "x"}},
]
ANTHROPIC_BAD = [
    {"system": [{"type": "text", "text": None}]},
    {"messages": [{"role": "user", "content": [None]}]},
    {"messages": [{"role": "assistant", "content": [None]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]},
    {
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [1]}]}
        ]
    },
    {
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": 1, "name": "f", "input": {}}]}
        ]
    },
    {"stop_sequences": "abc"},
    {"stop_sequences": 5},
    {"tool_choice": "auto"},
    {"tools": [{"name": "f"}], "tool_choice": "auto"},
    {"tools": 5},
    {"tools": [{"name": "f", "input_schema": "x"}]},
    {"thinking": {"type": "enabled", "budget_tokens": "x"}},
    {"output_config": "x"},
    {"output_config": {"format": "x"}},
    {"metadata": "x"},
    {"metadata": {"user_id": 5}},
    {"temperature": "hot"},
    {"max_tokens": True},
]


@pytest.mark.parametrize("patch", OPENAI_BAD, ids=range(len(OPENAI_BAD)))
def test_openai_to_anthropic_refuses(patch: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        _request(OA, AN, {**_OA_BODY, **patch})
    assert info.value.status == 400 and info.value.param


@pytest.mark.parametrize("patch", ANTHROPIC_BAD, ids=range(len(ANTHROPIC_BAD)))
def test_anthropic_to_openai_refuses(patch: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        _request(AN, OA, {**_AN_BODY, **patch})
    assert info.value.status == 400 and info.value.param


def test_named_tool_choice_without_a_name_stays_valid() -> None:
    """The first canonical codec read the name off the client body, not the validated one: a
    ``tool`` choice without ``name`` reached the provider as ``{"name": null}``."""
    out = _request(AN, OA, {**_AN_BODY, "tools": [{"name": ""}], "tool_choice": {"type": "tool"}})
    validate_request(OA, out)


def test_object_schema_without_type_gets_one() -> None:
    """``{"properties": {}}`` used to reach Anthropic as an input_schema without ``type: object``."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}]
    out = _request(OA, AN, {**_OA_BODY, "tools": tools})
    validate_request(AN, out)
    assert out["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


# Provider answers that crashed response() (or gave bad usage: negative, str, > 64-bit sums).
ANTHROPIC_RESPONSES = [
    {"content": [None], "stop_reason": [], "usage": None},
    {"content": 5, "usage": {"input_tokens": [], "output_tokens": "3"}},
    {"content": [{"type": "text", "text": None}], "id": None, "model": 5},
    {"usage": {"input_tokens": 2**64 - 1, "cache_read_input_tokens": 2**64 - 1, "output_tokens": -1}},
    {"usage": {"output_tokens_details": {"thinking_tokens": "x"}}},
]
OPENAI_RESPONSES = [
    {"choices": [None]},
    {"id": None, "model": 5},
    {"choices": [{"message": True, "finish_reason": []}]},
    {"choices": [{"message": {"tool_calls": [None, {"function": 1}]}}]},
    {"usage": {"prompt_tokens": 1, "prompt_tokens_details": True}},
    {"usage": {"prompt_tokens": 0, "completion_tokens": -1, "prompt_tokens_details": {"cached_tokens": 1}}},
    {"usage": {"prompt_tokens": 2**64 - 1, "completion_tokens": 2**64 - 1}},
]


@pytest.mark.parametrize("body", ANTHROPIC_RESPONSES, ids=range(len(ANTHROPIC_RESPONSES)))
def test_odd_anthropic_response(body: dict[str, Any]) -> None:
    for inbound in (OA, AN):
        out, usage = get_translator(inbound, AN).response(orjson.dumps(body))
        check_usage(usage)
        if inbound is OA:
            validate_response(OA, orjson.loads(out))


@pytest.mark.parametrize("body", OPENAI_RESPONSES, ids=range(len(OPENAI_RESPONSES)))
def test_odd_openai_response(body: dict[str, Any]) -> None:
    for inbound in (AN, OA):
        out, usage = get_translator(inbound, OA).response(orjson.dumps(body))
        check_usage(usage)
        if inbound is AN:
            validate_response(AN, orjson.loads(out))


@pytest.mark.parametrize("pair", [(OA, AN), (AN, OA), (OA, OA), (AN, AN)])
@pytest.mark.parametrize("body", [b"null", b"[1]", b"5", b"not json", b""])
def test_non_object_response_is_502(pair: tuple[Api, Api], body: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        get_translator(*pair).response(body)
    assert info.value.status == 502


def test_anthropic_passthrough_rerenders_foreign_error_shape() -> None:
    """An OpenAI-shaped error from an Anthropic provider was forwarded as-is to an Anthropic client."""
    status, out = get_translator(AN, AN).error(400, b'{"error": {"message": "bad", "type": "x"}}')
    assert status == 400
    validate_error(AN, out)
    assert orjson.loads(out)["error"]["message"] == "bad"


@pytest.mark.parametrize(
    ("inbound", "upstream", "chunks"),
    [
        (OA, AN, [b'data: {"type":"message_start","message":[null]}\n\n']),
        (
            OA,
            AN,
            [
                b"data: 5\n\n",
                b'data: {"type":"content_block_delta","index":[],"delta":{"type":"input_json_delta","partial_json":"x"}}\n\n',
            ],
        ),
        (
            OA,
            AN,
            [b'data: {"type":"message_delta","usage":{"output_tokens":"3"},"delta":{"stop_reason":[]}}\n\n'],
        ),
        (OA, AN, [b'data: {"type":"error","error":"boom"}\n\n']),
        (OA, AN, [b'data: {"type":"error","error":{"type":[],"message":""}}\n\n']),  # unhashable type
        (AN, OA, [b'data: {"choices":[null]}\n\n']),
        (AN, OA, [b'data: {"choices":[{"delta":{"tool_calls":[{"index":[]}]},"finish_reason":[]}]}\n\n']),
        (AN, OA, [b'data: {"choices":[{"delta":{"content":5}}],"usage":true}\n\n']),
        (AN, AN, [b'data: {"type":"message_start","message":[null]}\n\n']),
        (AN, AN, [b'data: {"type":"message_stop"}\n\ndata: {"type":"message_start","message":{}}\n\n']),
        (OA, OA, [b"data: [DONE]\n\n", b'data: {"choices":[]}\n\n']),
        (OA, OA, [b'data: {"choices":[],"usage":{"prompt_tokens_details":1}}\n\n']),
    ],
)
def test_odd_provider_stream(inbound: Api, upstream: Api, chunks: list[bytes]) -> None:
    """Each crashed feed(), or let events follow the terminal one; run_stream checks the contract."""
    run_stream(inbound, upstream, chunks, wants_usage=True)

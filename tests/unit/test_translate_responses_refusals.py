"""Every refusal of the Responses request codec: a 400 in OpenAI's format naming the parameter,
whatever the provider's API (the decoder refuses before any provider codec runs); and the
parameters dropped by rule are accepted without reaching the provider."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sidegate.errors import Api, GatewayError, format_error
from sidegate.translate import get_translator
from sidegate.translate.base import TranslateOptions

PNG = "data:image/png;base64,iVBORw0KGgo="
USER = {"role": "user", "content": "hi"}

REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("web_search", {"tools": [{"type": "web_search"}]}, "tools", "'web_search'"),
    (
        "file_search",
        {"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]},
        "tools",
        "'file_search'",
    ),
    (
        "code_interpreter",
        {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
        "tools",
        "'code_interpreter'",
    ),
    (
        "computer",
        {
            "tools": [
                {
                    "type": "computer_use_preview",
                    "display_width": 1,
                    "display_height": 1,
                    "environment": "linux",
                }
            ]
        },
        "tools",
        "'computer_use_preview'",
    ),
    ("image_generation", {"tools": [{"type": "image_generation"}]}, "tools", "'image_generation'"),
    ("mcp", {"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://x"}]}, "tools", "'mcp'"),
    ("local_shell", {"tools": [{"type": "local_shell"}]}, "tools", "'local_shell'"),
    ("custom_tool", {"tools": [{"type": "custom", "name": "x"}]}, "tools", "'custom'"),
    ("previous_response_id", {"previous_response_id": "resp_1"}, "previous_response_id", "stored response"),
    ("conversation", {"conversation": "conv_1"}, "conversation", "conversation"),
    ("prompt", {"prompt": {"id": "pmpt_1"}}, "prompt", "prompt"),
    ("background", {"background": True}, "background", "background"),
    ("unknown", {"frobnicate": True}, "frobnicate", "frobnicate"),
    ("top_logprobs", {"top_logprobs": 3}, "top_logprobs", "top_logprobs"),
    ("service_tier", {"service_tier": "flex"}, "service_tier", "service_tier"),
    (
        "context_management",
        {"context_management": [{"type": "compaction"}]},
        "context_management",
        "context_management",
    ),
    ("include_logprobs", {"include": ["message.output_text.logprobs"]}, "include", "logprobs"),
    ("include_not_list", {"include": "x"}, "include", "list"),
    ("json_object", {"text": {"format": {"type": "json_object"}}}, "text", "json_object"),
    ("schema_missing", {"text": {"format": {"type": "json_schema", "name": "x"}}}, "text", "schema"),
    ("verbosity", {"text": {"verbosity": "low"}}, "text", "verbosity"),
    ("text_not_object", {"text": "json"}, "text", "object"),
    ("reasoning_not_object", {"reasoning": "high"}, "reasoning", "object"),
    ("max_output_tokens", {"max_output_tokens": 0}, "max_output_tokens", "positive"),
    ("temperature_type", {"temperature": "hot"}, "temperature", "number"),
    ("tool_choice_without_tools", {"tool_choice": "required"}, "tool_choice", "requires tools"),
    (
        "tool_choice_hosted",
        {
            "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": None}],
            "tool_choice": {"type": "web_search_preview"},
        },
        "tool_choice",
        "web_search_preview",
    ),
    (
        "tool_choice_allowed",
        {
            "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": None}],
            "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []},
        },
        "tool_choice",
        "allowed_tools",
    ),
    (
        "tool_parameters",
        {"tools": [{"type": "function", "name": "f", "parameters": "x", "strict": None}]},
        "tools",
        "JSON Schema",
    ),
    ("instructions_type", {"instructions": ["x"]}, "instructions", "string"),
]
INPUT_REFUSED: list[tuple[str, Any, str]] = [
    ("empty", [], "non-empty"),
    ("not_list", 3, "string or a non-empty list"),
    ("item_not_object", ["hi"], "object"),
    ("only_system", [{"role": "system", "content": "x"}], "at least one"),
    ("bad_role", [{"role": "tool", "content": "x"}], "'tool'"),
    ("item_reference", [{"type": "item_reference", "id": "msg_1"}], "item_reference"),
    (
        "builtin_call",
        [USER, {"type": "computer_call", "id": "c", "call_id": "c", "action": {}}],
        "'computer_call'",
    ),
    (
        "builtin_output",
        [USER, {"type": "local_shell_call_output", "id": "x", "output": "y"}],
        "'local_shell_call_output'",
    ),
    (
        "image_file_id",
        [{"role": "user", "content": [{"type": "input_image", "file_id": "f", "detail": "auto"}]}],
        "file_id",
    ),
    (
        "image_scheme",
        [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x", "detail": "auto"}]}],
        "https",
    ),
    (
        "image_type",
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "data:image/bmp;base64,AA==", "detail": "auto"}
                ],
            }
        ],
        "image/bmp",
    ),
    (
        "image_not_base64",
        [
            {
                "role": "user",
                "content": [{"type": "input_image", "image_url": "data:image/png,xx", "detail": "auto"}],
            }
        ],
        "base64",
    ),
    (
        "file_url",
        [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}],
        "file_url",
    ),
    (
        "file_type",
        [{"role": "user", "content": [{"type": "input_file", "file_data": "data:text/csv;base64,AA=="}]}],
        "PDF",
    ),
    (
        "audio",
        [
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}],
            }
        ],
        "'input_audio'",
    ),
    (
        "assistant_image",
        [{"role": "assistant", "content": [{"type": "input_image", "image_url": PNG}]}],
        "'input_image'",
    ),
    (
        "system_image",
        [{"role": "system", "content": [{"type": "input_image", "image_url": PNG}]}, USER],
        "text",
    ),
    ("content_type", [{"role": "user", "content": 3}], "string or a list"),
    (
        "call_arguments",
        [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}],
        "JSON object",
    ),
    ("call_no_id", [{"type": "function_call", "name": "f", "arguments": "{}"}], "call_id"),
    (
        "output_image",
        [
            {
                "type": "function_call_output",
                "call_id": "c",
                "output": [{"type": "input_image", "image_url": PNG}],
            }
        ],
        "text only",
    ),
    ("output_type", [{"type": "function_call_output", "call_id": "c", "output": 3}], "string or a list"),
]


def _refusal(upstream: Api, body: dict[str, Any]) -> GatewayError:
    tr = get_translator(Api.RESPONSES, upstream)
    with pytest.raises(GatewayError) as info:
        tr.request({"model": "m", "input": "hi", **body}, model="up", opts=TranslateOptions())
    return info.value


@pytest.mark.parametrize("upstream", [Api.OPENAI, Api.ANTHROPIC])
@pytest.mark.parametrize(("name", "body", "param", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_parameters(upstream: Api, name: str, body: dict[str, Any], param: str, words: str):
    err = _refusal(upstream, body)
    assert (err.status, err.param) == (400, param)
    assert words in err.message, err.message
    out = orjson.loads(format_error(Api.RESPONSES, err))["error"]  # OpenAI's error format
    assert (
        out["type"] == "invalid_request_error"
        and out["param"] == param
        and out["code"] == "unsupported_parameter"
    )


@pytest.mark.parametrize("upstream", [Api.OPENAI, Api.ANTHROPIC])
@pytest.mark.parametrize(("name", "value", "words"), INPUT_REFUSED, ids=[r[0] for r in INPUT_REFUSED])
def test_refused_input_items(upstream: Api, name: str, value: Any, words: str):
    err = _refusal(upstream, {"input": value})
    assert (err.status, err.param) == (400, "input")
    assert words in err.message, err.message


def test_builtin_tool_message_names_the_tool_type():
    err = _refusal(Api.ANTHROPIC, {"tools": [{"type": "web_search_preview"}]})
    assert err.message.startswith("Tool type 'web_search_preview' is a built-in tool")


DROPPED = {
    "metadata": {"a": "b"},
    "store": False,
    "stream_options": {"include_obfuscation": False},
    "prompt_cache_key": "k",
    "prompt_cache_retention": "24h",
    "max_tool_calls": 3,
    "truncation": "auto",
    "include": ["reasoning.encrypted_content", "file_search_call.results"],
    "parallel_tool_calls": True,
    "top_logprobs": 0,
    "background": False,
    "service_tier": "auto",
    "previous_response_id": None,
    "conversation": None,
    "prompt": None,
    "reasoning": {"effort": "none", "summary": "detailed"},
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
}


@pytest.mark.parametrize("upstream", [Api.OPENAI, Api.ANTHROPIC])
def test_dropped_parameters_do_not_reach_the_provider(upstream: Api):
    tr = get_translator(Api.RESPONSES, upstream)
    plain = tr.request({"model": "m", "input": "hi"}, model="up", opts=TranslateOptions())
    dropped = tr.request({"model": "m", "input": "hi", **DROPPED}, model="up", opts=TranslateOptions())
    assert dropped.body == plain.body


def test_reasoning_without_budgets_is_refused_for_anthropic():
    tr = get_translator(Api.RESPONSES, Api.ANTHROPIC)
    with pytest.raises(GatewayError) as info:
        tr.request(
            {"model": "m", "input": "hi", "reasoning": {"effort": "high"}},
            model="up",
            opts=TranslateOptions(reasoning_budgets={}),
        )
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("client", "body", "param"),
    [
        (Api.OPENAI, {"messages": [USER], "stop": "x"}, "stop"),
        (Api.OPENAI, {"messages": [USER], "top_k": 3}, "top_k"),
        (Api.OPENAI, {"messages": [USER], "n": 2}, "n"),
        (Api.ANTHROPIC, {"max_tokens": 5, "messages": [USER], "stop_sequences": ["x"]}, "stop_sequences"),
        (Api.ANTHROPIC, {"max_tokens": 5, "messages": [USER], "top_k": 3}, "top_k"),
        (Api.ANTHROPIC, {"max_tokens": 5, "messages": [USER], "container": "c"}, "container"),
    ],
)
def test_provider_side_refusals(client: Api, body: dict[str, Any], param: str):
    """Chat and Messages clients on a Responses provider: what the Responses API cannot take."""
    with pytest.raises(GatewayError) as info:
        get_translator(client, Api.RESPONSES).request(
            {"model": "m", **body}, model="up", opts=TranslateOptions()
        )
    assert (info.value.status, info.value.param) == (400, param)

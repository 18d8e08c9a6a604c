"""Each decision of the Anthropic-client policy toward other APIs (docs/translation.md, "Anthropic
client -> OpenAI provider"): what today's SDK and coding agents send is mapped, dropped or refused,
and the same-API route keeps all of it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sidegate.errors import Api, GatewayError, format_error
from sidegate.translate import TranslateOptions, get_translator
from sidegate.translate.codecs.anthropic.params import DROPPED, REFUSED

A2O = get_translator(Api.ANTHROPIC, Api.OPENAI)
APASS = get_translator(Api.ANTHROPIC, Api.ANTHROPIC)
MSG = [{"role": "user", "content": "x"}]
BASE: dict[str, Any] = {"model": "claude", "max_tokens": 64, "messages": MSG}
TOOL = {"name": "Read", "input_schema": {"type": "object", "properties": {"p": {"type": "string"}}}}


def _out(body: dict[str, Any], **opts: Any) -> dict[str, Any]:
    return orjson.loads(A2O.request({**BASE, **body}, model="m", opts=TranslateOptions(**opts)).body)


def _refused(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        _out(body)
    assert err.value.status == 400
    return err.value


# ------------------------------------------------------------------------------------------ map


@pytest.mark.parametrize("effort", ["low", "medium", "high", "xhigh", "max"])
def test_output_config_effort_is_reasoning_effort(effort: str) -> None:
    assert _out({"output_config": {"effort": effort}})["reasoning_effort"] == effort


def test_output_config_format_is_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = _out({"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "minimal"), (5000, "medium"), (24576, "high"), (60000, "high")]
)
def test_thinking_budget_maps_by_the_budget_table(budget: int, effort: str) -> None:
    out = _out(
        {"max_tokens": 64000, "thinking": {"type": "enabled", "budget_tokens": budget, "display": "omitted"}}
    )
    assert out["reasoning_effort"] == effort


@pytest.mark.parametrize("kind", ["adaptive", "disabled", "between_tools"])
def test_thinking_without_budget_leaves_the_provider_default(kind: str) -> None:
    assert "reasoning_effort" not in _out({"thinking": {"type": kind}})


def test_explicit_effort_wins_over_thinking_budget() -> None:
    body = {"thinking": {"type": "enabled", "budget_tokens": 2000}, "output_config": {"effort": "high"}}
    assert _out(body)["reasoning_effort"] == "high"


def test_system_turns_become_system_messages_in_place() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {
            "role": "system",
            "content": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        },
        {"role": "user", "content": "b"},
    ]
    out = _out({"system": "top", "messages": messages})
    assert [(m["role"], m["content"]) for m in out["messages"]] == [
        ("system", "top"),
        ("user", "a"),
        ("system", "be brief"),
        ("user", "b"),
    ]


def test_system_turn_cleared_at_next_user_message_is_shown_only_before_it() -> None:
    turn = {"role": "system", "content": "only now", "clear_at": "next_user_message"}
    last = _out({"messages": [*MSG, turn]})["messages"]
    assert last[-1] == {"role": "system", "content": "only now"}
    passed = _out({"messages": [*MSG, turn, {"role": "user", "content": "y"}]})["messages"]
    assert all(m["content"] != "only now" for m in passed)


def test_system_turn_effort_wins_over_the_top_level_one() -> None:
    turn = {"role": "system", "content": "quick", "output_config": {"effort": "low"}}
    out = _out({"output_config": {"effort": "high"}, "messages": [turn, *MSG]})
    assert out["reasoning_effort"] == "low"
    cleared = {**turn, "clear_at": "next_user_message"}  # it served an earlier reply only
    out = _out({"output_config": {"effort": "high"}, "messages": [cleared, *MSG]})
    assert out["reasoning_effort"] == "high"


@pytest.mark.parametrize(
    ("choice", "tool_choice", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}, None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tool_choice_variants(choice: dict[str, Any], tool_choice: Any, parallel: bool | None) -> None:
    out = _out({"tools": [TOOL], "tool_choice": choice})
    assert out["tool_choice"] == tool_choice
    assert out.get("parallel_tool_calls") == parallel


def test_metadata_user_id_is_user() -> None:
    assert _out({"metadata": {"user_id": "u1"}})["user"] == "u1"


# ----------------------------------------------------------------------------------------- drop


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cache_control", {"type": "ephemeral", "ttl": "1h"}),
        ("context_management", {"edits": [{"type": "clear_tool_uses_20250919"}]}),
        ("service_tier", "standard_only"),
        ("service_tier", "auto"),
        ("speed", "fast"),
        ("inference_geo", "eu"),
        ("diagnostics", {"previous_message_id": "msg_1"}),
        ("fallbacks", ["default"]),
        ("fallback_credit_token", "tok"),
        ("billing_policy", {"type": "billing_policy", "bill_to": "self"}),
        ("thread", {"type": "create"}),
        ("container", None),
    ],
)
def test_anthropic_server_steering_is_dropped(key: str, value: Any) -> None:
    assert _out({key: value}) == _out({})


def test_every_dropped_key_is_tested() -> None:
    assert set(DROPPED) == {
        "cache_control",
        "context_management",
        "service_tier",
        "speed",
        "inference_geo",
        "diagnostics",
        "fallbacks",
        "fallback_credit_token",
        "billing_policy",
    }


def test_cache_control_on_blocks_and_tools_leaves_no_trace() -> None:
    cc = {"type": "ephemeral"}
    body = {
        "system": [{"type": "text", "text": "s", "cache_control": cc}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": cc}]}],
        "tools": [{**TOOL, "cache_control": cc}],
    }
    assert b"cache_control" not in A2O.request({**BASE, **body}, model="m", opts=TranslateOptions()).body


def test_custom_tool_fields_for_anthropics_tool_runner_are_dropped() -> None:
    extra = {"defer_loading": True, "allowed_callers": ["direct"], "eager_input_streaming": True}
    extra["input_examples"] = [{"p": "a"}]
    assert _out({"tools": [{**TOOL, **extra}]}) == _out({"tools": [TOOL]})


# --------------------------------------------------------------------------------------- refuse


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("container", "cntr_1"),
        ("mcp_servers", [{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}]),
        ("compaction", {"type": "compaction"}),
        ("thread", {"type": "continue", "previous_message_id": "msg_1"}),
        ("frobnicate", 1),
    ],
)
def test_what_changes_the_answer_is_refused_naming_the_parameter(key: str, value: Any) -> None:
    err = _refused({key: value})
    assert err.param == key and repr(key) in err.message
    body = orjson.loads(format_error(Api.ANTHROPIC, err))
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_every_refused_key_is_tested() -> None:
    assert set(REFUSED) == {"container", "mcp_servers", "compaction", "thread"}


@pytest.mark.parametrize(
    "kind",
    [
        "web_search_20250305",
        "web_fetch_20250910",
        "code_execution_20250825",
        "tool_search_tool_bm25_20251119",
    ],
)
def test_server_tools_are_refused(kind: str) -> None:
    err = _refused({"tools": [TOOL, {"type": kind, "name": "server"}]})
    assert err.param == "tools" and "server tool" in err.message


@pytest.mark.parametrize("kind", ["bash_20250124", "text_editor_20250728", "memory_20250818"])
def test_anthropic_defined_client_tools_are_refused_with_the_fix(kind: str) -> None:
    err = _refused({"tools": [{"type": kind, "name": "t"}]})
    assert err.param == "tools" and "custom tool" in err.message


@pytest.mark.parametrize("kind", ["tool_addition", "tool_removal"])
def test_system_turn_changing_the_tool_set_is_refused(kind: str) -> None:
    turn = {
        "role": "system",
        "content": [{"type": kind, "tool": {"type": "tool_reference", "tool_name": "Read"}}],
    }
    assert _refused({"tools": [TOOL], "messages": [turn, *MSG]}).param == "messages"


def test_thinking_of_an_unknown_type_is_refused() -> None:
    assert _refused({"thinking": {"type": "sometimes"}}).param == "thinking"


# ---------------------------------------------------------------------------------- passthrough


def test_anthropic_provider_gets_every_field_as_sent() -> None:
    body = {
        **BASE,
        "messages": [*MSG, {"role": "system", "content": "s", "clear_at": "next_user_message"}],
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "container": "cntr_1",
        "mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}],
        "service_tier": "standard_only",
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "max"},
        "cache_control": {"type": "ephemeral"},
        "tools": [TOOL, {"type": "web_search_20250305", "name": "web_search"}],
    }
    out = orjson.loads(APASS.request(dict(body), model="m", opts=TranslateOptions()).body)
    assert out == {**body, "model": "m"}

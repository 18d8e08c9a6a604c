"""Issue 23: an agent-shaped Messages request (what Claude Code sends: a long system prompt with cache
breakpoints, tools, thinking, context_management, output_config, a system turn inside messages,
announced by anthropic-beta) through a real Envoy with the anthropic SDK as the client. To an
OpenAI provider it is translated (mapped / dropped / refused per docs/translation.md) into a chat
completion request the OpenAI SDK's types accept; to a provider reached through OpenAI's Responses
API (`api: responses`) into a Responses request those types accept; to an Anthropic provider it
arrives as sent."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from translate_helpers import validate_request

from sidegate.errors import Api

pytestmark = pytest.mark.e2e
STACK_EXTRA = {
    "providers": {"oai-responses": {"api": "responses", "base_url": "FAKE_OPENAI", "api_key_env": "E2E_OPENAI_KEY"}},
    "models": {"resp-agent": {"routes": [{"provider": "oai-responses", "model": "gpt-4o-mini"}]}},
}

BETAS = ["context-management-2025-06-27", "interleaved-thinking-2025-05-14"]
LONG = " ".join(
    f"Rule {i}: keep every change minimal, run the tests that cover it, report what ran."
    for i in range(1, 121)
)
CC = {"type": "ephemeral"}
SYSTEM = [
    {
        "type": "text",
        "text": "You are Claude Code, Anthropic's official CLI for Claude.",
        "cache_control": CC,
    },
    {"type": "text", "text": "You help users with software engineering tasks. " + LONG, "cache_control": CC},
]


def _tool(name: str, desc: str, props: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    return {"name": name, "description": desc, "input_schema": schema}


TOOLS = [
    _tool("Read", "Reads a file from the local filesystem.", {"file_path": {"type": "string"}}),
    _tool("Bash", "Executes a bash command.", {"command": {"type": "string"}}),
    {**_tool("Edit", "Replaces a string in a file.", {"file_path": {"type": "string"}, "new": {"type": "string"}}),
     "cache_control": CC},
]  # fmt: skip
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "text", "text": "tests/test_a.py fails. Fix it.", "cache_control": CC}]},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Let me read it."},
        {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "tests/test_a.py"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "assert f() == 2"}]},
    {"role": "system", "content": "Plan mode is off: you may edit files."},
]  # fmt: skip
AGENT: dict[str, Any] = {
    "max_tokens": 8192,
    "system": SYSTEM,
    "messages": MESSAGES,
    "tools": TOOLS,
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 4000},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "output_config": {"effort": "medium"},
    "metadata": {"user_id": "session-123"},
    "service_tier": "auto",
}
# Beta fields of the SDK's create() (named arguments); the rest goes as extra_body.
_EXTRA = ("cache_control",)


def ant(stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0, timeout=30
    )


def _check_openai_request(fake_openai) -> dict[str, Any]:
    rec = fake_openai.requests[-1]
    assert rec.path == "/v1/chat/completions"
    assert "anthropic-beta" not in rec.headers and "anthropic-version" not in rec.headers
    body = rec.json
    validate_request(Api.OPENAI, body)  # the OpenAI SDK's request type, no undeclared key
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "system"]
    assert body["messages"][0]["content"].endswith(LONG) and body["messages"][-1]["content"].startswith(
        "Plan mode"
    )
    assert [t["function"]["name"] for t in body["tools"]] == ["Read", "Bash", "Edit"]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is False
    assert body["reasoning_effort"] == "medium" and body["user"] == "session-123"
    assert b"cache_control" not in rec.body and b"context_management" not in rec.body
    return body


def test_agent_request_to_openai_provider(stack, fake_openai):
    r = ant(stack).beta.messages.create(
        model="gpt-4o-mini", betas=BETAS, extra_body={"cache_control": CC}, **AGENT
    )
    assert r.type == "message" and r.role == "assistant" and r.stop_reason == "end_turn"
    assert r.content and r.content[0].type == "text" and r.content[0].text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    body = _check_openai_request(fake_openai)
    assert "stream" not in body


def test_agent_request_streamed_to_openai_provider(stack, fake_openai):
    with ant(stack).beta.messages.stream(model="gpt-4o-mini", betas=BETAS, **AGENT) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].text == text and final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    body = _check_openai_request(fake_openai)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_structured_output_with_effort_to_openai_provider(stack, fake_openai):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    r = ant(stack).beta.messages.create(
        model="gpt-4o-mini",
        max_tokens=200,
        betas=BETAS,
        messages=[{"role": "system", "content": "JSON only."}, {"role": "user", "content": "Is it ok?"}],
        thinking={"type": "adaptive"},
        output_config={"effort": "low", "format": {"type": "json_schema", "schema": schema}},
        context_management={"edits": [{"type": "clear_thinking_20251015"}]},
    )
    assert r.content[0].type == "text"
    body = fake_openai.requests[-1].json
    validate_request(Api.OPENAI, body)
    assert body["reasoning_effort"] == "low"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        (
            "mcp_servers",
            [{"type": "url", "url": "https://mcp.example.com/sse", "name": "docs"}],
            "'mcp_servers'",
        ),
        ("tools", [{"type": "web_search_20250305", "name": "web_search"}], "'web_search_20250305'"),
    ],
)
def test_what_the_provider_cannot_honour_is_a_400_naming_it(stack, fake_openai, field, value, named):
    with pytest.raises(anthropic.BadRequestError) as err:
        ant(stack).beta.messages.create(
            model="gpt-4o-mini", max_tokens=50, betas=["mcp-client-2025-04-04"], messages=MESSAGES[:1],
            **{field: value},
        )  # fmt: skip
    assert err.value.status_code == 400
    error = err.value.body["error"]  # Anthropic's error format
    assert error["type"] == "invalid_request_error" and named in error["message"]
    assert fake_openai.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_agent_request_to_anthropic_provider_arrives_intact(stack, fake_anthropic, stream):
    c = ant(stack)
    sent = {**AGENT, "cache_control": CC}
    if stream:
        with c.beta.messages.stream(
            model="claude-haiku", betas=BETAS, extra_body={"cache_control": CC}, **AGENT
        ) as s:
            final = s.get_final_message()
    else:
        final = c.beta.messages.create(
            model="claude-haiku", betas=BETAS, extra_body={"cache_control": CC}, **AGENT
        )
    assert final.content and final.usage.output_tokens > 0
    rec = fake_anthropic.requests[-1]
    assert rec.path == "/v1/messages"
    assert rec.headers["anthropic-beta"] == ",".join(BETAS)
    body = rec.json
    assert body.pop("model") == "claude-3-5-haiku-20241022"
    assert bool(body.pop("stream", False)) is stream
    assert body == sent


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_agent_request_to_a_responses_provider(stack, fake_openai, stream):
    """The same agent request to a provider only reached through the Responses API: translated to a
    Responses request (instructions, input items with the tool round trip, function tools,
    reasoning effort), and the answer back in Anthropic's shape."""
    c = ant(stack)
    if stream:
        with c.beta.messages.stream(model="resp-agent", betas=BETAS, **AGENT) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text and final.content[-1].type == "text" and final.content[-1].text == text
    else:
        final = c.beta.messages.create(model="resp-agent", betas=BETAS, extra_body={"cache_control": CC}, **AGENT)
    assert final.role == "assistant" and final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    rec = fake_openai.requests[-1]
    assert rec.path == "/v1/responses" and "anthropic-beta" not in rec.headers
    body = rec.json
    validate_request(Api.RESPONSES, body)  # the OpenAI SDK's Responses request type, no undeclared key
    assert body["model"] == "gpt-4o-mini" and bool(body.get("stream")) is stream
    assert LONG in str(body.get("instructions", "")) + str(body["input"])
    kinds = [item.get("type", "message") for item in body["input"]]
    assert "function_call" in kinds and "function_call_output" in kinds
    assert [t["name"] for t in body["tools"]] == ["Read", "Bash", "Edit"]
    assert body["reasoning"]["effort"] == "medium"
    assert b"cache_control" not in rec.body and b"context_management" not in rec.body

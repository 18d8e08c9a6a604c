"""The fakes refuse what the providers refuse: bodies the official SDKs' request types reject, and
conversations whose tool calls and results do not pair up (chat, Anthropic Messages, Responses)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from sidegate.fakes import FakeProviderThread

KEY = "sk-test-validation"
USER = [{"role": "user", "content": "hi"}]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread(api_key=KEY) as fp:
        yield fp


@pytest.fixture(autouse=True)
def _clean(fake: FakeProviderThread) -> None:
    fake.reset()


def client(fake: FakeProviderThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0, timeout=5.0)


def post(fake: FakeProviderThread, body: dict[str, Any], path: str = "/v1/responses") -> httpx.Response:
    return httpx.post(fake.url + path, json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=5.0)


def test_what_the_api_defaults_is_not_required(fake: FakeProviderThread) -> None:
    """The SDK's types require a function tool's `strict` and `parameters` and a passed-back assistant
    message's `id`, `status` and annotations; the API defaults them."""
    tool = {"type": "function", "name": "f"}
    assert post(fake, {"model": "m", "input": "x", "tools": [tool]}).status_code == 200
    r = post(fake, {"model": "m", "input": "x", "tools": [{**tool, "strict": "yes"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].strict"
    said = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Echo: q"}]}
    turns = [{"role": "user", "content": "q"}, said, {"role": "user", "content": "again"}]
    assert (
        post(fake, {"model": "m", "input": turns}).json()["output"][0]["content"][0]["text"] == "Echo: again"
    )
    wrong = {**said, "content": [{"type": "output_text"}]}
    r = post(fake, {"model": "m", "input": [turns[0], wrong, turns[2]]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[1].content[0].text"
    said_wrongly = {**said, "content": [{"type": "input_text", "text": "Echo: q"}]}  # the SDK lets it through
    r = post(fake, {"model": "m", "input": [turns[0], said_wrongly, turns[2]]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[1].content[0]"


def test_chat_and_messages_validated_against_the_sdk_types(fake: FakeProviderThread) -> None:
    r = post(fake, {"model": "m", "messages": [{"role": "bogus", "content": "x"}]}, "/v1/chat/completions")
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].role"
    assert "'user'" in r.json()["error"]["message"]
    r = post(fake, {"model": "m", "messages": [], "stream_opts": {}}, "/v1/chat/completions")
    assert r.json()["error"]["message"] == "Unrecognized request argument supplied: stream_opts"
    body = {"model": "m", "messages": USER, "stream_options": {"include_usage": True}}
    r = post(fake, body, "/v1/chat/completions")
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"
    assert post(fake, {**body, "stream": True}, "/v1/chat/completions").status_code == 200
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}
    r = post(fake, body, "/v1/messages")
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("messages.0.content")
    body = {**body, "messages": [{"role": "user", "content": "x"}], "context_management": {"edits": []}}
    assert post(fake, body, "/v1/messages").status_code == 200  # the beta surface is accepted
    r = post(fake, {**body, "betas": ["context-management-2025-06-27"]}, "/v1/messages")
    assert r.json()["error"]["message"] == "betas: Extra inputs are not permitted"  # a header, not a field


def test_anthropic_sampling_parameters_follow_the_api_version(fake: FakeProviderThread) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": USER, "temperature": 0.5, "top_k": 3}
    old, new = {"anthropic-version": "2023-06-01"}, {"anthropic-version": "2026-10-21"}
    url, auth = fake.url + "/v1/messages", {"x-api-key": KEY}
    assert httpx.post(url, json=body, headers={**auth, **old}).status_code == 200
    assert httpx.post(url, json=body, headers=auth).status_code == 200  # no header: the oldest version
    r = httpx.post(url, json=body, headers={**auth, **new})
    assert r.json()["error"]["message"] == "temperature: Extra inputs are not permitted"
    r = httpx.post(url, json={**body, "temperature": 1.5}, headers={**auth, **old})
    assert r.json()["error"]["message"] == "temperature: Input should be less than or equal to 1"


# -- conversations that do not hold together --------------------------------------------------------
def test_responses_tool_outputs_and_calls_pair_up(fake: FakeProviderThread) -> None:
    output = {"type": "function_call_output", "call_id": "call_nowhere", "output": "x"}
    r = post(fake, {"model": "gpt-4o-mini", "input": [output]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert (
        r.json()["error"]["message"]
        == "No tool call found for function call output with call_id call_nowhere."
    )
    call = {"type": "function_call", "call_id": "call_here", "name": "get_weather", "arguments": "{}"}
    r = post(fake, {"model": "gpt-4o-mini", "input": [call]})
    assert r.json()["error"]["message"] == "No tool output found for function call call_here."
    answered = {**output, "call_id": "call_here"}
    assert post(fake, {"model": "gpt-4o-mini", "input": [call, answered]}).status_code == 200
    # A response that called a tool: the next turn must answer the call.
    fake.script([{"tool_calls": "auto"}])
    first = client(fake).responses.create(model="gpt-4o-mini", input="w?", tools=[WEATHER])
    (made,) = [item for item in first.output if item.type == "function_call"]
    r = post(fake, {"model": "gpt-4o-mini", "previous_response_id": first.id, "input": "and?"})
    assert r.json()["error"]["message"] == f"No tool output found for function call {made.call_id}."
    # Two turns later the call is still part of the conversation.
    done = {**output, "call_id": made.call_id}
    second = post(fake, {"model": "gpt-4o-mini", "previous_response_id": first.id, "input": [done]}).json()
    r = post(fake, {"model": "gpt-4o-mini", "previous_response_id": second["id"], "input": [done]})
    assert r.status_code == 200, r.text


def test_chat_tool_messages_pair_up(fake: FakeProviderThread) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    asked = [*USER, {"role": "assistant", "content": None, "tool_calls": [call]}]
    r = post(
        fake,
        {"model": "m", "messages": [*USER, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]},
        "/v1/chat/completions",
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.[1].role"
    r = post(fake, {"model": "m", "messages": [*asked, *USER]}, "/v1/chat/completions")
    assert r.status_code == 400 and "call_1" in r.json()["error"]["message"]
    ok = [*asked, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    r = post(fake, {"model": "m", "messages": ok}, "/v1/chat/completions")
    assert r.json()["choices"][0]["message"]["content"] == "Echo: x"  # the tool's result, as every API


def test_anthropic_tool_results_pair_up(fake: FakeProviderThread) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}
    base = {"model": "claude-sonnet-4-5", "max_tokens": 50}
    r = post(fake, {**base, "messages": [{"role": "user", "content": [result]}]}, "/v1/messages")
    assert r.status_code == 400 and "unexpected `tool_use_id`" in r.json()["error"]["message"]
    turns = [*USER, {"role": "assistant", "content": [use]}]
    r = post(fake, {**base, "messages": [*turns, *USER]}, "/v1/messages")
    assert r.status_code == 400 and "without `tool_result` blocks" in r.json()["error"]["message"]
    ok = [*turns, {"role": "user", "content": [result]}]
    assert post(fake, {**base, "messages": ok}, "/v1/messages").status_code == 200

"""Issue 3: the official SDKs across schemas through a real Envoy; what the fake provider received
validates against the provider SDK's own request types."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from anthropic.types import MessageCreateParams
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY
from openai.types.chat import CompletionCreateParams
from pydantic import TypeAdapter

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
_ANTHROPIC_REQ = TypeAdapter(MessageCreateParams)
_OPENAI_REQ = TypeAdapter(CompletionCreateParams)


def _validate_anthropic_request(body: dict) -> None:
    _ANTHROPIC_REQ.validate_python(body)
    for m in body["messages"]:  # Iterable[...] validates lazily: force it
        list(m["content"]) if isinstance(m["content"], list) else None


def oai(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0, timeout=20)


def ant(stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0, timeout=20)


def test_openai_sdk_to_anthropic_text(stack, fake_anthropic):
    r = oai(stack).chat.completions.create(
        model="claude-haiku", messages=[{"role": "system", "content": "Be terse."}, *MSG], max_tokens=50, stop=["END"]
    )
    assert r.object == "chat.completion" and r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    rec = fake_anthropic.requests[-1]
    assert rec.path == "/v1/messages"
    assert rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY and "anthropic-version" in rec.headers
    assert "authorization" not in rec.headers
    body = rec.json
    _validate_anthropic_request(body)
    assert body["system"] == "Be terse." and body["stop_sequences"] == ["END"] and body["max_tokens"] == 50
    assert body["model"] == "claude-3-5-haiku-20241022"


def test_openai_sdk_to_anthropic_stream_with_usage(stack, fake_anthropic):
    chunks = list(oai(stack).chat.completions.create(
        model="claude-haiku", messages=MSG, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    _validate_anthropic_request(fake_anthropic.requests[-1].json)


def test_openai_sdk_to_anthropic_tools_non_stream_and_stream(stack, fake_anthropic):
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_weather", "arguments": {"city": "Lyon"}}]
    fake_anthropic.script([{"tool_calls": calls}, {"tool_calls": calls}])
    r = oai(stack).chat.completions.create(model="claude-haiku", messages=MSG, tools=TOOLS, tool_choice="required")
    tc = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and len(tc) == 2
    assert [json.loads(t.function.arguments) for t in tc] == [{"city": "Paris"}, {"city": "Lyon"}]
    sent = fake_anthropic.requests[-1].json
    _validate_anthropic_request(sent)
    assert sent["tool_choice"] == {"type": "any"} and sent["tools"][0]["name"] == "get_weather"

    stream = oai(stack).chat.completions.create(model="claude-haiku", messages=MSG, tools=TOOLS, stream=True)
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for t in choice.delta.tool_calls or []:
                args[t.index] = args.get(t.index, "") + (t.function.arguments or "")
                if t.function.name:
                    names[t.index] = t.function.name
    assert finish == "tool_calls"
    assert names == {0: "get_weather", 1: "get_weather"}
    assert [json.loads(args[i]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Lyon"}]


def test_openai_tool_result_round_trip_and_image(stack, fake_anthropic):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]  # fmt: skip
    r = oai(stack).chat.completions.create(model="claude-haiku", messages=messages, tools=TOOLS)
    assert r.choices[0].message.content
    sent = fake_anthropic.requests[-1].json
    _validate_anthropic_request(sent)
    blocks = sent["messages"][0]["content"]
    assert blocks[1]["type"] == "image" and blocks[1]["source"]["type"] == "base64"
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}


def test_unsupported_parameter_is_400_not_dropped(stack, fake_anthropic):
    with pytest.raises(openai.BadRequestError) as exc:
        oai(stack).chat.completions.create(model="claude-haiku", messages=MSG, n=3)
    assert "n" in exc.value.body["message"]
    assert fake_anthropic.requests == []


def test_anthropic_sdk_to_openai_provider(stack, fake_openai):
    c = ant(stack)
    m = c.messages.create(model="gpt-4o-mini", max_tokens=100, system="Be terse.", messages=MSG)
    assert m.type == "message" and m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason == "end_turn" and m.usage.output_tokens > 0
    rec = fake_openai.requests[-1]
    assert rec.path == "/v1/chat/completions" and rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    assert "x-api-key" not in rec.headers
    _OPENAI_REQ.validate_python(rec.json)
    assert rec.json["messages"][0] == {"role": "system", "content": "Be terse."}


def test_anthropic_sdk_to_openai_stream_with_tools(stack, fake_openai):
    fake_openai.script([{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}])
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": TOOLS[0]["function"]["parameters"]}]
    with ant(stack).messages.stream(model="gpt-4o-mini", max_tokens=100, messages=MSG, tools=tools) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"city": "Paris"}
    assert final.usage.output_tokens > 0
    sent = fake_openai.requests[-1].json
    _OPENAI_REQ.validate_python(sent)
    assert sent["stream_options"] == {"include_usage": True}


def test_provider_error_translated_to_client_format(stack, fake_anthropic):
    fake_anthropic.script([{"status": 400, "error": "max_tokens: too large"}])
    with pytest.raises(openai.BadRequestError) as exc:
        oai(stack).chat.completions.create(model="claude-haiku", messages=MSG)
    assert "max_tokens" in exc.value.body["message"]


def test_translated_stream_is_not_buffered(stack, fake_anthropic):
    """Anthropic SSE -> OpenAI chunks through the upstream translator: chunks flow as they come."""
    import time

    fake_anthropic.script([{"chunks": 6, "chunk_delay_s": 0.4}])
    start = time.monotonic()
    first_at = None
    for chunk in oai(stack).chat.completions.create(model="claude-haiku", messages=MSG, stream=True):
        if first_at is None and chunk.choices and chunk.choices[0].delta.content:
            first_at = time.monotonic() - start
    total = time.monotonic() - start
    # The fake sends message_start, content_block_start and ping before the first text delta, each
    # after a delay: content arrives mid-stream, and a couple of seconds of stream follow it.
    assert first_at is not None and total - first_at > 2.0, (first_at, total)

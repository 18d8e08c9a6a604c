"""`POST /v1/responses` through a real Envoy on both fronts, with the official `openai` SDK as the
client, against each provider kind: an OpenAI provider that serves the Responses API (passthrough),
an OpenAI-shaped one without it (`responses: false`: translated to chat completions), an Anthropic
one (translated to Messages); and chat / Messages clients on an `api: responses` provider (every
client API translated to Responses). Sync, streamed, a two-turn tool call, structured output, a
fallback from a failing OpenAI provider to Anthropic, and refusals in OpenAI's format.
Lanes and quota: tests/e2e/test_responses_lanes.py."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY, Stack
from pydantic import BaseModel
from responses_helpers import FALLBACK_MODEL, WEATHER_TOOL, front_gateway, local_chat_provider, oai

pytestmark = pytest.mark.e2e

EXTRA: dict[str, Any] = {
    "providers": {
        # The same fake, reached as an OpenAI-shaped server without the Responses API...
        "local": local_chat_provider(),
        # ...and as an OpenAI endpoint spoken to only through the Responses API.
        "oai-responses": {"api": "responses", "base_url": "FAKE_OPENAI", "api_key_env": "E2E_OPENAI_KEY"},
    },
    "models": {
        "local-model": {"routes": [{"provider": "local"}]},
        "resp-only": {"routes": [{"provider": "oai-responses"}]},
        "fallback": FALLBACK_MODEL,
    },
}
KINDS = {
    # model: (fake fixture, the path the provider was asked on, its credential header, value)
    "gpt-4o-mini": ("fake_openai", "/v1/responses", "authorization", f"Bearer {OPENAI_PROVIDER_KEY}"),
    "local-model": ("fake_openai", "/v1/chat/completions", "authorization", f"Bearer {OPENAI_PROVIDER_KEY}"),
    "claude-haiku": ("fake_anthropic", "/v1/messages", "x-api-key", ANTHROPIC_PROVIDER_KEY),
}
PROVIDER = {"gpt-4o-mini": "openai", "local-model": "local", "claude-haiku": "anthropic"}


gw = front_gateway(EXTRA)


def provider_request(request: pytest.FixtureRequest, model: str) -> Any:
    """The one request the model's provider received, checked: its path and our credential."""
    fixture, path, header, value = KINDS[model]
    (rec,) = request.getfixturevalue(fixture).requests
    assert rec.path == path and rec.headers[header] == value
    return rec


@pytest.mark.parametrize("model", sorted(KINDS))
def test_create(gw: Stack, request: pytest.FixtureRequest, model: str) -> None:
    fake = request.getfixturevalue(KINDS[model][0])
    fake.script([{"usage": {"prompt_tokens": 12, "completion_tokens": 5}}])
    raw = oai(gw).responses.with_raw_response.create(model=model, input="Say hi", instructions="Be brief.")
    resp = raw.parse()
    assert resp.object == "response" and resp.status == "completed" and "Say hi" in resp.output_text
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (12, 5)
    assert raw.headers["x-sidegate-provider"] == PROVIDER[model]
    rec = provider_request(request, model)
    assert gw.keys["acme"].key not in repr(rec.headers)
    led = gw.wait_ledger(lambda r: r.model == model and (r.input_tokens, r.output_tokens) == (12, 5))
    assert (led.api, led.status, led.tenant, led.stream) == ("responses", 200, "acme", False)


@pytest.mark.parametrize("model", sorted(KINDS))
def test_stream(gw: Stack, request: pytest.FixtureRequest, model: str) -> None:
    fake = request.getfixturevalue(KINDS[model][0])
    fake.script([{"usage": {"prompt_tokens": 9, "completion_tokens": 6}, "chunks": 4}])
    deltas: list[str] = []
    with oai(gw).responses.stream(model=model, input="Stream hi") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert len(deltas) > 1 and "".join(deltas) == final.output_text and "Stream hi" in final.output_text
    assert final.status == "completed" and (final.usage.input_tokens, final.usage.output_tokens) == (9, 6)
    rec = provider_request(request, model)
    assert rec.json["stream"] is True
    led = gw.wait_ledger(lambda r: r.model == model and (r.input_tokens, r.output_tokens) == (9, 6))
    assert led.stream and led.api == "responses" and not led.aborted


@pytest.mark.parametrize("model", sorted(KINDS))
def test_two_turn_tool_call(gw: Stack, request: pytest.FixtureRequest, model: str) -> None:
    fake = request.getfixturevalue(KINDS[model][0])
    fake.script([{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]}])
    client = oai(gw)
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(model=model, input=[question], tools=[WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert (
        len(calls) == 1
        and calls[0].name == "get_weather"
        and json.loads(calls[0].arguments) == {"city": "Paris"}
    )
    # The next turn carries the previous output items back, with the tool's result.
    history = [question, *(item.model_dump(exclude_none=True) for item in first.output)]
    output = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}
    second = client.responses.create(model=model, input=[*history, output], tools=[WEATHER_TOOL])
    assert second.status == "completed" and "sunny, 21 C" in second.output_text  # the fake echoes the result
    sent = request.getfixturevalue(KINDS[model][0]).requests[-1].json
    # The provider got the call and its result in its own API's words.
    if model == "gpt-4o-mini":
        assert sent["input"][-1] == output and sent["input"][-2]["call_id"] == calls[0].call_id
    elif model == "local-model":
        tool_msg = sent["messages"][-1]
        assert tool_msg["role"] == "tool" and tool_msg["content"] == "sunny, 21 C"
        assert sent["messages"][-2]["tool_calls"][0]["id"] == tool_msg["tool_call_id"]
    else:
        result = sent["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and "sunny, 21 C" in str(result["content"])
        assert sent["messages"][-2]["content"][-1]["type"] == "tool_use"


class Weather(BaseModel):
    city: str
    temperature_c: int
    sunny: bool


@pytest.mark.parametrize("model", sorted(KINDS))
def test_structured_output(gw: Stack, model: str) -> None:
    parsed = oai(gw).responses.parse(model=model, input="Weather in Paris as JSON.", text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather)


def test_fallback_from_a_failing_openai_provider_to_anthropic(gw: Stack, fake_openai, fake_anthropic) -> None:
    fake_openai.script([{"status": 503, "error": "overloaded"}])
    fake_anthropic.script([{"usage": {"input_tokens": 8, "output_tokens": 3}}])
    raw = oai(gw).responses.with_raw_response.create(model="fallback", input="Still there?")
    resp = raw.parse()
    assert "Still there?" in resp.output_text
    assert raw.headers["x-sidegate-provider"] == "anthropic" and raw.headers["x-sidegate-attempts"] == "2"
    assert [r.path for r in fake_openai.requests] == ["/v1/responses"]
    assert [r.path for r in fake_anthropic.requests] == ["/v1/messages"]
    led = gw.wait_ledger(lambda r: r.model == "fallback" and r.status == 200)
    assert (led.provider, led.attempts, led.input_tokens, led.output_tokens) == ("anthropic", 2, 8, 3)


def test_chat_and_messages_clients_on_a_responses_provider(gw: Stack, fake_openai) -> None:
    chat = oai(gw).chat.completions.create(
        model="resp-only", messages=[{"role": "user", "content": "Hello chat"}]
    )
    assert "Hello chat" in (chat.choices[0].message.content or "")
    chunks = list(oai(gw).chat.completions.create(model="resp-only", messages=[{"role": "user", "content": "Hi"}],
                                                  stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        and chunks[-1].usage is not None
    )
    claude = anthropic.Anthropic(base_url=gw.base_url, api_key=gw.keys["acme"].key, max_retries=0)
    msg = claude.messages.create(
        model="resp-only", max_tokens=100, messages=[{"role": "user", "content": "Hello messages"}]
    )
    assert "Hello messages" in msg.content[0].text
    assert [r.path for r in fake_openai.requests] == ["/v1/responses"] * 3
    assert all(r.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}" for r in fake_openai.requests)
    assert fake_openai.requests[0].json["input"]  # a Responses body


def test_bad_requests_get_openai_errors(gw: Stack, fake_openai, fake_anthropic) -> None:
    client = oai(gw)
    with pytest.raises(openai.BadRequestError) as err:
        client.post("/responses", body={"model": "gpt-4o-mini"}, cast_to=object)
    assert err.value.body["param"] == "input" and err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o-mini", input=[])
    assert err.value.body["param"] == "input"
    # A built-in tool only a Responses provider can run: refused for the others, never dropped.
    for model in ("local-model", "claude-haiku"):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model=model, input="Search the web", tools=[{"type": "web_search"}])
        assert "web_search" in err.value.message
    assert not fake_openai.requests and not fake_anthropic.requests

"""The OpenAI Agents SDK (PyPI `openai-agents`) through a real Envoy, unchanged but for the base URL
and the key: an agent with a function tool runs its loop (model call -> tool call -> the tool's
result sent back -> final answer) over the Responses API against each provider kind: an OpenAI
provider serving Responses (passthrough), an OpenAI-shaped one without it (`responses: false`:
translated to chat completions) and an Anthropic one (translated to Messages). Offline: tracing off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import agents
import openai
import pytest
from responses_helpers import local_chat_provider

pytestmark = pytest.mark.e2e

STACK_EXTRA = {
    "providers": {"local": local_chat_provider()},
    "models": {"local-model": {"routes": [{"provider": "local"}]}},
}
KINDS = {"gpt-4o-mini": ("fake_openai", "/v1/responses"), "local-model": ("fake_openai", "/v1/chat/completions"),
         "claude-haiku": ("fake_anthropic", "/v1/messages")}  # fmt: skip
CITIES: list[str] = []


@agents.function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CITIES.append(city)
    return f"sunny in {city}"


@pytest.fixture
def gateway_client(stack) -> Iterator[openai.AsyncOpenAI]:
    """The SDK's default client pointed at the gateway (the only change an app makes)."""
    client = openai.AsyncOpenAI(
        base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0
    )
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_tracing_disabled(True)
    CITIES.clear()
    yield client
    if not client.is_closed():
        asyncio.run(client.close())


@pytest.mark.parametrize("model", sorted(KINDS))
def test_an_agent_with_a_function_tool(
    stack, gateway_client: openai.AsyncOpenAI, request: pytest.FixtureRequest, model: str
) -> None:
    fixture, path = KINDS[model]
    fake = request.getfixturevalue(fixture)
    fake.script([{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]}])
    before = len(stack.ledger())
    agent = agents.Agent(
        name="Weather", instructions="Answer with the weather tool.", tools=[get_weather], model=model
    )
    result = agents.Runner.run_sync(agent, "What is the weather in Paris?")
    assert CITIES == ["Paris"]  # the SDK ran the tool the model asked for...
    assert [r.path for r in fake.requests] == [path, path]
    assert b"sunny in Paris" in fake.requests[1].body  # ...and sent its result back to the model
    assert "sunny in Paris" in str(result.final_output)  # the fake's final answer echoes it
    kinds = [type(item).__name__ for item in result.new_items]
    assert kinds[:2] == ["ToolCallItem", "ToolCallOutputItem"] and kinds[-1] == "MessageOutputItem"
    deadline, records = time.monotonic() + 5, []
    while len(records) < 2 and time.monotonic() < deadline:  # the ledger is written in batches
        records = [r for r in stack.ledger()[before:] if r.model == model]
        time.sleep(0.05)
    assert [(r.api, r.status) for r in records] == [("responses", 200)] * 2


@pytest.mark.parametrize("model", sorted(KINDS))
def test_a_streamed_agent_run(
    stack, gateway_client: openai.AsyncOpenAI, request: pytest.FixtureRequest, model: str
) -> None:
    """The same loop streamed (`Runner.run_streamed`): Responses streams with a function call, then
    the answer, from each provider kind (passthrough: the direct lane; translated: event by event)."""
    fixture, path = KINDS[model]
    fake = request.getfixturevalue(fixture)
    fake.script([{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Rome"}'}]}])
    agent = agents.Agent(
        name="Weather", instructions="Answer with the weather tool.", tools=[get_weather], model=model
    )

    async def run() -> tuple[str, list[str]]:
        result = agents.Runner.run_streamed(agent, "What is the weather in Rome?")
        deltas = [e.data.delta async for e in result.stream_events()
                  if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"]  # fmt: skip
        await gateway_client.close()  # its connections belong to this event loop
        return str(result.final_output), deltas

    final, deltas = asyncio.run(run())
    assert CITIES == ["Rome"] and "sunny in Rome" in final and "".join(deltas) == final
    assert [r.path for r in fake.requests] == [path, path] and all(r.json["stream"] for r in fake.requests)

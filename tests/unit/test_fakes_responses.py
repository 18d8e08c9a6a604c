"""The fakes' Responses API (`POST /v1/responses`), driven by the official `openai` SDK, and the fakes'
validation of requests against the SDKs' request types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from sidegate.fakes import FakeProviderThread
from sidegate.fakes.structured import schema_instance

KEY = "sk-test-responses"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
EVENTS = TypeAdapter(ResponseStreamEvent)
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread(chunks=3, api_key=KEY) as fp:
        yield fp


@pytest.fixture(autouse=True)
def _clean(fake: FakeProviderThread) -> None:
    fake.reset()


def client(fake: FakeProviderThread, base: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + base, api_key=KEY, max_retries=0, timeout=5.0)


def post(fake: FakeProviderThread, body: dict[str, Any], path: str = "/v1/responses") -> httpx.Response:
    return httpx.post(fake.url + path, json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=5.0)


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event line, data) of each SSE event; every one must have both lines."""
    out = []
    for block in raw.decode().strip().split("\n\n"):
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        out.append((event[7:], orjson.loads(data[6:])))
    return out


# -- JSON answers ---------------------------------------------------------------------------------
def test_create_json_matches_the_sdk_model(fake: FakeProviderThread) -> None:
    raw = client(fake).responses.with_raw_response.create(
        model="gpt-4o-mini", input="What is the capital of France?", instructions="Be brief."
    )
    r = raw.parse()
    assert r.output_text == "Echo: What is the capital of France?"
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.model == "gpt-4o-mini" and r.instructions == "Be brief." and r.incomplete_details is None
    msg = r.output[0]
    assert msg.type == "message" and msg.id.startswith("msg_") and msg.role == "assistant"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (8, 7, 15)
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert raw.headers["x-request-id"].startswith("req_") and "openai-processing-ms" in raw.headers
    assert raw.headers["x-ratelimit-remaining-requests"]
    # Strict validation of the raw body, not the SDK's lenient construct().
    Response.model_validate_json(raw.http_response.content)


def test_last_user_text_of_an_item_list_is_echoed(fake: FakeProviderThread) -> None:
    r = client(fake).responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "Echo: first"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second one"}]},
        ],
    )
    assert r.output_text == "Echo: second one"


def test_fixed_text_and_scripted_content(fake: FakeProviderThread) -> None:
    fake.script([{"content": "scripted", "usage": {"input_tokens": 11, "output_tokens": 3}}])
    r = client(fake).responses.create(model="gpt-4o-mini", input="x")
    assert r.output_text == "scripted"
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens) == (11, 3)


def test_max_output_tokens_makes_an_incomplete_response(fake: FakeProviderThread) -> None:
    fake.script([{"content": " ".join(f"w{i}" for i in range(40))}])
    r = client(fake).responses.create(model="gpt-4o-mini", input="x", max_output_tokens=16)
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 16
    assert r.output_text == " ".join(f"w{i}" for i in range(16))


def test_reasoning_item_when_asked(fake: FakeProviderThread) -> None:
    r = client(fake).responses.create(
        model="o4-mini",
        input="think",
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    )
    kinds = [item.type for item in r.output]
    assert kinds == ["reasoning", "message"]
    reasoning = r.output[0]
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.summary and reasoning.encrypted_content
    assert r.usage is not None and r.usage.output_tokens_details.reasoning_tokens > 0


def test_azure_path(fake: FakeProviderThread) -> None:
    r = client(fake, "/openai/v1").responses.create(model="my-deployment", input="hi azure")
    assert r.output_text == "Echo: hi azure"
    assert [req.path for req in fake.requests] == ["/openai/v1/responses"]


# -- streams --------------------------------------------------------------------------------------
def test_stream_events_are_the_real_sequence(fake: FakeProviderThread) -> None:
    raw = post(fake, {"model": "gpt-4o-mini", "input": "one two three four five six", "stream": True})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    events = sse(raw.content)
    kinds = [name for name, _ in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    for i, (name, data) in enumerate(events):
        assert data["type"] == name and data["sequence_number"] == i
        EVENTS.validate_python(data)  # strictly, as the SDK's event union
    deltas = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert deltas == "Echo: one two three four five six"
    assert all("obfuscation" in d for n, d in events if n.endswith(".delta"))
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] == 7
    assert events[0][1]["response"]["status"] == "in_progress" and events[0][1]["response"]["usage"] is None


def test_sdk_stream_and_final_response(fake: FakeProviderThread) -> None:
    with client(fake).responses.stream(model="gpt-4o-mini", input="stream this") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Echo: stream this" == final.output_text
    assert final.usage is not None and final.usage.total_tokens == final.usage.input_tokens + 3


def test_stream_error_event_and_truncation(fake: FakeProviderThread) -> None:
    fake.script([{"stream_error": {"after": 3, "message": "boom", "code": "server_error"}}])
    events = sse(post(fake, {"model": "gpt-4o-mini", "input": "x", "stream": True}).content)
    assert [n for n, _ in events][-1] == "error"
    assert events[-1][1] == {
        "type": "error",
        "sequence_number": 3,
        "code": "server_error",
        "message": "boom",
        "param": None,
    }
    fake.script([{"truncate": 4}])
    events = sse(post(fake, {"model": "gpt-4o-mini", "input": "x", "stream": True}).content)
    assert len(events) == 4 and "response.completed" not in [n for n, _ in events]


# -- tools ----------------------------------------------------------------------------------------
def test_tool_call_round_trip(fake: FakeProviderThread) -> None:
    c = client(fake)
    fake.script([{"tool_calls": "auto"}])
    first = c.responses.create(
        model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER, {"type": "web_search"}]
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and first.output_text == ""
    call = calls[0]
    assert call.id is not None and call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"city": "city-value", "unit": "c"}
    second = c.responses.create(
        model="gpt-4o-mini",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22 degrees, sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "Echo: 22 degrees, sunny"


def test_tool_call_stream(fake: FakeProviderThread) -> None:
    fake.script([{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]}])
    with client(fake).responses.stream(model="gpt-4o-mini", input="w?", tools=[WEATHER]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (call,) = final.output
    assert call.type == "function_call" and orjson.loads(call.arguments) == {"city": "Paris", "unit": "c"}


# -- structured output -----------------------------------------------------------------------------
class Address(BaseModel):
    street: str
    zip_code: int | None


class Person(BaseModel):
    name: str
    age: int
    tags: list[str]
    home: Address
    kind: str = "human"


def test_structured_output_parses(fake: FakeProviderThread) -> None:
    parsed = client(fake).responses.parse(model="gpt-4o-mini", input="who?", text_format=Person)
    assert isinstance(parsed.output_parsed, Person)
    assert parsed.output_parsed.home.zip_code == 0


def test_schema_instance_covers_refs_and_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 3},
            "s": {"type": "string", "minLength": 6, "format": "email"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 2},
            "opt": {"anyOf": [{"type": "null"}, {"type": "number"}]},
        },
        "required": ["n", "s", "items", "opt"],
        "$defs": {"Item": {"type": "object", "properties": {"k": {"const": "v"}}}},
    }
    assert schema_instance(schema) == {
        "n": 3,
        "s": "fake@example.com",
        "items": [{"k": "v"}, {"k": "v"}],
        "opt": 0.0,
    }


# -- errors ---------------------------------------------------------------------------------------
def test_scripted_errors_in_openai_format(fake: FakeProviderThread) -> None:
    fake.script([{"status": 429, "path": "/v1/responses"}])
    with pytest.raises(openai.RateLimitError) as err:
        client(fake).responses.create(model="gpt-4o-mini", input="x")
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.code == "rate_limit_exceeded"
    fake.script([{"status": 503}])
    with pytest.raises(openai.InternalServerError):
        client(fake).responses.create(model="gpt-4o-mini", input="x")


def test_missing_key_is_401(fake: FakeProviderThread) -> None:
    bad = openai.OpenAI(base_url=fake.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.responses.create(model="gpt-4o-mini", input="x")
    assert err.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "gpt-4o-mini", "input": "x", "temprature": 1}, "temprature", "unknown_parameter"),
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 4}, "max_output_tokens", "integer_below_min_value"),
        ({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": "9"}, "max_output_tokens", "invalid_type"),
        ({"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text", "missing_required_parameter"),
        ({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "resp_never"}, "previous_response_id", "previous_response_not_found"),
        ({"model": "gpt-4o-mini", "input": "x", "stream_options": {"include_obfuscation": False}}, "stream_options", None),
    ],
)  # fmt: skip
def test_validation_refusals(
    fake: FakeProviderThread, body: dict[str, Any], param: str, code: str | None
) -> None:
    r = post(fake, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")
    assert r.headers["x-request-id"]


def test_requests_are_recorded_with_their_route(fake: FakeProviderThread) -> None:
    client(fake).responses.create(model="gpt-4o-mini", input="x")
    (req,) = fake.requests
    assert req.path == "/v1/responses" and req.json["input"] == "x"
    logged = httpx.get(fake.url + "/_fake/requests").json()
    assert logged[0]["path"] == "/v1/responses" and logged[0]["route"] == "responses"


def test_a_provider_without_the_responses_api() -> None:
    with FakeProviderThread(responses_api=False) as fp:
        r = httpx.post(fp.url + "/v1/responses", json={"model": "m", "input": "x"}, timeout=5.0)
        assert r.status_code == 404
        assert r.json()["error"]["message"] == "Invalid URL (POST /v1/responses)"
        chat = {"model": "m", "messages": USER}
        assert httpx.post(fp.url + "/v1/chat/completions", json=chat, timeout=5.0).status_code == 200


def test_openai_agents_sdk_runs_against_the_fake(fake: FakeProviderThread) -> None:
    """The OpenAI Agents SDK's requests (both model kinds, a tool round trip) pass the validation."""
    import agents  # the test extra installs openai-agents: a missing one fails, never skips

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    agents.set_tracing_disabled(True)
    oai = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0, timeout=5.0)
    kinds = [
        agents.OpenAIResponsesModel("gpt-4o-mini", oai),
        agents.OpenAIChatCompletionsModel("gpt-4o-mini", oai),
    ]
    for model, route in zip(kinds, ["responses", "chat"], strict=True):
        fake.reset()
        fake.script([{"tool_calls": "auto"}])
        agent = agents.Agent(name="a", instructions="Help.", tools=[get_weather], model=model)
        result = agents.Runner.run_sync(agent, "Weather in Paris?")
        assert [r.route for r in fake.requests] == [route, route]
        assert result.final_output == "Echo: sunny in city-value"

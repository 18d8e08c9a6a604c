"""The fake providers, driven by the official `openai` and `anthropic` SDKs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from sidegate.fakes import FakeProvider, FakeProviderThread

USER = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS_OAI = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]  # fmt: skip
CALLS = [
    {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
    {"name": "get_time", "arguments": {}},
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread(chunks=3) as fp:
        yield fp


@pytest.fixture(autouse=True)
def _clean(fake: FakeProviderThread) -> None:
    fake.reset()


def oai(fake: FakeProviderThread, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test-oai", max_retries=0, timeout=timeout)


def ant(fake: FakeProviderThread, timeout: float = 5.0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0, timeout=timeout)


# -- OpenAI ---------------------------------------------------------------------------------------
def test_openai_non_stream(fake: FakeProviderThread) -> None:
    raw = oai(fake).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    r = raw.parse()
    assert r.choices[0].message.content == "Echo: What is the capital of France?"
    assert r.model == "gpt-4o-mini" and r.object == "chat.completion" and r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 7, 13)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["content-type"] == "application/json"
    assert {"x-ratelimit-remaining-requests", "x-ratelimit-limit-tokens", "openai-processing-ms"} <= set(
        raw.headers
    )


def test_openai_stream_with_usage(fake: FakeProviderThread) -> None:
    chunks = list(oai(fake).chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: What is the capital of France?"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 3  # chunks=3
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    )
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_stream_without_usage_and_fixed_content(fake: FakeProviderThread) -> None:
    fake.script([{"content": "one two three four five six", "chunks": 6}])
    chunks = list(oai(fake).chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    assert [c.choices[0].delta.content for c in chunks[1:-1]] == [
        "one",
        " two",
        " three",
        " four",
        " five",
        " six",
    ]
    assert all(c.usage is None for c in chunks)


def test_openai_tool_calls_non_stream_and_stream(fake: FakeProviderThread) -> None:
    client = oai(fake)
    fake.script([{"tool_calls": CALLS}])
    r = client.chat.completions.create(model="gpt-4o", messages=USER, tools=TOOLS_OAI)  # type: ignore[arg-type]
    calls = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {})]  # fmt: skip

    fake.script([{"tool_calls": "auto", "chunks": 5}])
    with client.chat.completions.stream(model="gpt-4o", messages=USER, tools=TOOLS_OAI) as stream:  # type: ignore[arg-type]
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert events.count("tool_calls.function.arguments.delta") >= 6  # arguments in several small pieces
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "city-value"}), ("get_time", {})]  # fmt: skip
    assert calls[0].id != calls[1].id


def test_openai_embeddings_deterministic(fake: FakeProviderThread) -> None:
    client = oai(fake)
    a = client.embeddings.create(
        model="text-embedding-3-small", input=["hello", "world"]
    )  # base64 on the wire
    b = client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=1536)
    assert len(a.data) == 2 and len(a.data[0].embedding) == 1536
    assert a.data[0].embedding == pytest.approx(b.data[0].embedding, abs=1e-6)
    assert a.data[0].embedding != a.data[1].embedding
    assert sum(x * x for x in a.data[1].embedding) == pytest.approx(1.0, abs=1e-4)
    floats = client.embeddings.create(model="m", input="hello", dimensions=8, encoding_format="float")
    assert len(floats.data[0].embedding) == 8 and a.usage.prompt_tokens == 2


def test_openai_models_and_azure(fake: FakeProviderThread) -> None:
    assert "gpt-4o-mini" in [m.id for m in oai(fake).models.list()]
    az = openai.AzureOpenAI(
        azure_endpoint=fake.url, api_key="az-key", api_version="2024-06-01", max_retries=0
    )
    r = az.chat.completions.create(model="my-deployment", messages=USER)
    assert (
        r.choices[0].message.content == "Echo: What is the capital of France?" and r.model == "my-deployment"
    )
    req = fake.requests[-1]
    assert req.path == "/openai/deployments/my-deployment/chat/completions"
    assert req.headers["api-key"] == "az-key" and req.query["api-version"] == "2024-06-01"


# -- Anthropic ------------------------------------------------------------------------------------
def test_anthropic_non_stream_and_stream(fake: FakeProviderThread) -> None:
    client = ant(fake)
    raw = client.messages.with_raw_response.create(
        model="claude-3-5-haiku-20241022", max_tokens=50, messages=USER
    )
    m = raw.parse()
    assert m.content[0].type == "text" and m.content[0].text == "Echo: What is the capital of France?"
    assert m.stop_reason == "end_turn" and m.model == "claude-3-5-haiku-20241022"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (6, 7)
    assert (
        raw.headers["request-id"].startswith("req_")
        and "anthropic-ratelimit-requests-remaining" in raw.headers
    )
    with client.messages.stream(model="claude-fake-1", max_tokens=50, messages=USER, system="Be brief.") as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert final.content[0].text == "Echo: What is the capital of France?"  # type: ignore[union-attr]
    assert (
        final.usage.output_tokens == 7 and final.usage.input_tokens == 8 and final.stop_reason == "end_turn"
    )
    assert kinds[:2] == ["message_start", "content_block_start"] and "ping" not in kinds  # SDK drops pings
    assert kinds[-1] == "message_stop"


def test_anthropic_tool_use_stream(fake: FakeProviderThread) -> None:
    fake.script([{"tool_calls": CALLS, "content": "Checking.", "chunks": 4}])
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
             {"name": "get_time", "input_schema": {"type": "object"}}]  # fmt: skip
    with ant(fake).messages.stream(model="claude-fake-1", max_tokens=50, messages=USER, tools=tools) as s:  # type: ignore[arg-type]
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert [b.type for b in final.content] == [
        "text",
        "tool_use",
        "tool_use",
    ] and final.stop_reason == "tool_use"
    assert final.content[1].input == {"city": "Paris", "unit": "celsius"}  # type: ignore[union-attr]
    assert final.content[1].id.startswith("toolu_") and final.content[2].input == {}  # type: ignore[union-attr]
    assert kinds.count("input_json") >= 4


def test_anthropic_sse_wire_order(fake: FakeProviderThread) -> None:
    body = {"model": "claude-fake-1", "max_tokens": 5, "stream": True, "messages": USER}
    r = httpx.post(fake.url + "/v1/messages", json=body)
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    # OpenAI streams end with [DONE]
    r = httpx.post(fake.url + "/v1/chat/completions", json={"model": "m", "messages": USER, "stream": True})
    assert r.text.endswith("data: [DONE]\n\n")


# -- Errors and faults ----------------------------------------------------------------------------
def test_openai_errors(fake: FakeProviderThread) -> None:
    client = oai(fake)
    fake.script(
        [{"status": 429, "retry_after": 7}, {"status": 500}, {"status": 400, "error": {"param": "messages"}}]
    )
    with pytest.raises(openai.RateLimitError) as e429:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert e429.value.response.headers["retry-after"] == "7"
    assert set(e429.value.response.json()["error"]) == {"message", "type", "param", "code"}
    assert e429.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError) as e500:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert e500.value.response.json()["error"]["type"] == "server_error"
    with pytest.raises(openai.BadRequestError) as e400:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert e400.value.param == "messages"


def test_anthropic_errors(fake: FakeProviderThread) -> None:
    client = ant(fake)
    fake.script([{"status": 529}, {"status": 429}, {"status": 500, "error": "boom"}])
    with pytest.raises(anthropic.APIStatusError) as e529:
        client.messages.create(model="c", max_tokens=5, messages=USER)
    assert e529.value.status_code == 529
    body = e529.value.response.json()
    assert body["type"] == "error" and body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    with pytest.raises(anthropic.RateLimitError) as e429:
        client.messages.create(model="c", max_tokens=5, messages=USER)
    assert e429.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.InternalServerError) as e500:
        client.messages.create(model="c", max_tokens=5, messages=USER)
    assert e500.value.response.json()["error"] == {"type": "api_error", "message": "boom"}
    r = httpx.post(fake.url + "/v1/messages", json={"model": "c", "messages": USER})  # no max_tokens
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.alone  # bounds a duration
def test_reset_hang_delay_garbage(fake: FakeProviderThread) -> None:
    client = oai(fake, timeout=0.4)
    fake.script([{"reset": True}, {"hang": True}, {"delay_s": 2}, {"garbage": True}])
    with pytest.raises(openai.APIConnectionError) as reset:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert not isinstance(reset.value, openai.APITimeoutError)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert time.monotonic() - t0 < 2
    deadline = time.monotonic() + 2
    while fake.in_flight and time.monotonic() < deadline:  # the hang ended when the client left
        time.sleep(0.01)
    assert fake.in_flight == 0
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert len(fake.requests) == 4


def test_anthropic_reset(fake: FakeProviderThread) -> None:
    fake.script([{"reset": True}])
    with pytest.raises(anthropic.APIConnectionError):
        ant(fake).messages.create(model="c", max_tokens=5, messages=USER)


def test_stream_reset_after_chunks(fake: FakeProviderThread) -> None:
    fake.script([{"reset_after_chunks": 2, "chunks": 5}])
    got = []
    with pytest.raises((httpx.HTTPError, openai.APIConnectionError)):
        for c in oai(fake).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True):
            got.append(c)
    assert len(got) == 2


def test_truncated_streams(fake: FakeProviderThread) -> None:
    fake.script([{"truncate": 3}, {"truncate": True}])
    chunks = list(oai(fake).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))
    assert len(chunks) == 3 and all(c.choices[0].finish_reason is None for c in chunks)
    events = [e.type for e in ant(fake).messages.create(model="c", max_tokens=5, messages=USER, stream=True)]
    assert events and "message_stop" not in events and "message_delta" not in events
    # the connection closed cleanly: a normal request works right after
    assert oai(fake).chat.completions.create(model="gpt-4o-mini", messages=USER).choices


def test_mid_stream_error_events(fake: FakeProviderThread) -> None:
    fake.script([{"stream_error": {"after": 2, "type": "overloaded_error", "message": "Overloaded"}},
                 {"stream_error": {"after": 2, "message": "upstream broke"}}])  # fmt: skip
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        list(ant(fake).messages.create(model="c", max_tokens=5, messages=USER, stream=True))
    with pytest.raises(openai.APIError, match="upstream broke"):
        list(oai(fake).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))


def test_script_matching_and_default(fake: FakeProviderThread) -> None:
    client = oai(fake)
    fake.script([{"model": "gpt-4o", "status": 503}, {"path": "/v1/messages", "status": 529}])
    assert client.chat.completions.create(model="gpt-4o-mini", messages=USER).choices  # not matched
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert len(fake.pending_script) == 1
    with pytest.raises(anthropic.APIStatusError):
        ant(fake).messages.create(model="c", max_tokens=5, messages=USER)
    fake.set_default({"status": 500})
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert client.models.list().data  # defaults without `path` only hit inference routes
    fake.script([{"content": "scripted wins", "times": 2}])
    assert (
        client.chat.completions.create(model="m", messages=USER).choices[0].message.content == "scripted wins"
    )
    assert (
        client.chat.completions.create(model="m", messages=USER).choices[0].message.content == "scripted wins"
    )
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=USER)
    fake.set_default(None)
    assert client.chat.completions.create(model="m", messages=USER).choices
    fake.script([{"usage": {"prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 64}}])
    u = client.chat.completions.create(model="m", messages=USER).usage
    assert u is not None and (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (100, 20, 120)
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 64


# -- Recording and control API --------------------------------------------------------------------
def test_request_log_and_http_control(fake: FakeProviderThread) -> None:
    oai(fake).chat.completions.create(model="gpt-4o-mini", messages=USER, extra_headers={"X-Trace": "t1"})
    req = fake.requests[-1]
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer sk-test-oai" and req.headers["x-trace"] == "t1"
    assert json.loads(req.body) == req.json and req.json["messages"] == USER
    listed = httpx.get(fake.url + "/_fake/requests").json()
    assert (
        len(listed) == 1
        and listed[0]["json"]["model"] == "gpt-4o-mini"
        and listed[0]["headers"]["x-trace"] == "t1"
    )
    assert httpx.delete(fake.url + "/_fake/requests").status_code == 200 and fake.requests == []
    assert httpx.post(fake.url + "/_fake/script", json=[{"status": 429, "retry_after": 3}]).json() == {
        "pending": 1
    }
    with pytest.raises(openai.RateLimitError):
        oai(fake).chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert httpx.post(fake.url + "/_fake/script", json=[{"bogus": 1}]).status_code == 400
    assert httpx.post(fake.url + "/_fake/default", json={"status": 502}).status_code == 200
    assert (
        httpx.post(fake.url + "/v1/chat/completions", json={"model": "m", "messages": USER}).status_code
        == 502
    )
    assert httpx.post(fake.url + "/_fake/reset").status_code == 200 and fake.requests == []


def test_first_sse_chunk_arrives_before_stream_ends(fake: FakeProviderThread) -> None:
    """The stream is written as it goes, not buffered: the first chunk arrives before the fake's
    later delays have run. Only the gap after the first chunk is asserted (the fake sleeps through
    it whatever the load), never how soon anything arrives."""
    fake.script([{"chunks": 4, "chunk_delay_s": 0.15, "content": "a b c d"}])
    t0 = time.monotonic()
    stamps = []
    for _ in oai(fake).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True):
        stamps.append(time.monotonic() - t0)
    assert stamps[-1] - stamps[0] >= 0.15 * 4 * 0.9


def test_api_key_enforced() -> None:
    with FakeProviderThread(api_key="sk-right") as fp:
        with pytest.raises(openai.AuthenticationError):
            oai(fp).chat.completions.create(model="m", messages=USER)
        with pytest.raises(anthropic.AuthenticationError) as e:
            ant(fp).messages.create(model="c", max_tokens=5, messages=USER)
        assert e.value.response.json()["error"]["type"] == "authentication_error"
        ok = openai.OpenAI(base_url=fp.url + "/v1", api_key="sk-right", max_retries=0)
        assert ok.chat.completions.create(model="m", messages=USER).choices


def test_in_process_async_and_fixed_text() -> None:
    async def run() -> tuple[int, str, dict]:
        async with FakeProvider(port=0, fixed_text="Paris.") as fp:
            async with httpx.AsyncClient() as c:
                r = await c.post(fp.url + "/v1/chat/completions", json={"model": "m", "messages": USER})
            return fp.port, r.text, r.json()

    port, _, body = asyncio.run(run())
    assert port > 0 and body["choices"][0]["message"]["content"] == "Paris."


def test_cli_runs_until_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sidegate.fakes", "--port", "0", "--port", "0", "--chunks", "2"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().split()[-1] for _ in range(2)]
        assert len(set(urls)) == 2
        r = httpx.post(urls[1] + "/v1/messages", json={"model": "c", "max_tokens": 5, "messages": USER})
        assert r.json()["content"][0]["text"] == "Echo: What is the capital of France?"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

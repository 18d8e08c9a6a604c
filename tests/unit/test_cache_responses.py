"""The cache on OpenAI's Responses API: keys (what is one question, what is another), which answers
are stored, the whole answer from a stream, and hits replayed as JSON or SSE that the `openai` SDK's
own models parse."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from sidegate.config.cache import CachePolicy
from sidegate.errors import Api
from sidegate.features.cache import CacheRequest, ResponseCache, reassemble, refusal_reason, replay_answer
from sidegate.features.cache.feature import CacheFeature
from sidegate.sse import SseParser
from sidegate.translate.base import Usage

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
POLICY = CachePolicy(exact=True)


def key(body: dict[str, Any], **kw: Any) -> CacheRequest:
    return CacheRequest.from_body(Api.RESPONSES, kw.get("tenant", "acme"), kw.get("model", "gpt-4o"), body,
                                  kw.get("headers"))  # fmt: skip


def body(**params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "input": "What is the capital of France?", **params}


def test_one_question_said_several_ways_is_one_key() -> None:
    q = "What is the capital of France?"
    ways = [
        body(),
        body(input=[{"role": "user", "content": q}]),
        body(input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": q}]}]),
        body(input=[{"role": "user", "content": [{"type": "input_text", "text": q,
                                                  "prompt_cache_breakpoint": {"mode": "explicit"}}]}]),
        body(tool_choice="auto", parallel_tool_calls=True, truncation="disabled", tools=[],
             text={"format": {"type": "text"}}, instructions=None, temperature=1),
        body(stream=True, stream_options={"include_obfuscation": False}, metadata={"a": "b"}, store=False,
             user="u1", safety_identifier="s", prompt_cache_key="k", prompt_cache_retention="24h", service_tier="auto"),
    ]  # fmt: skip
    keys = {key(w).exact_key for w in ways}
    assert len(keys) == 1
    assert {key(w).query_text for w in ways} == {q}


@pytest.mark.parametrize(
    "change",
    [
        {"instructions": "Answer in French."},
        {"temperature": 0.2},
        {"max_output_tokens": 10},
        {"text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}},
        {"tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]},
        {"tool_choice": "required"},
        {"reasoning": {"effort": "high"}},
        {"previous_response_id": "resp_1"},
        {"include": ["reasoning.encrypted_content"]},
        {
            "input": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": "What is the capital of France?"},
            ]
        },
    ],
)
def test_answer_changing_fields_change_scope(change: dict[str, Any]) -> None:
    base = key(body())
    other = key(body(**change))
    assert other.scope != base.scope and other.exact_key != base.exact_key


def test_tenant_model_and_api_are_in_the_scope() -> None:
    base = key(body())
    assert key(body(), tenant="other").scope != base.scope
    assert key(body(), model="gpt-4o-mini").scope != base.scope
    chat = CacheRequest.from_body(
        Api.OPENAI, "acme", "gpt-4o", {"messages": [{"role": "user", "content": body()["input"]}]}
    )
    assert chat.exact_key != base.exact_key


def test_the_last_question_is_the_query_earlier_turns_the_scope() -> None:
    history = [
        {"role": "user", "content": "Hi"},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]},
    ]  # fmt: skip
    a = key(body(input=[*history, {"role": "user", "content": "Capital of France?"}]))
    b = key(body(input=[*history, {"role": "user", "content": "Capital of Spain?"}]))
    assert a.scope == b.scope and a.exact_key != b.exact_key
    assert (a.query_text, b.query_text) == ("Capital of France?", "Capital of Spain?")
    # not a text question: exact only
    image = [
        {"type": "input_text", "text": "What is it?"},
        {"type": "input_image", "image_url": "https://x/a.png"},
    ]
    assert key(body(input=[{"role": "user", "content": image}])).query_text is None
    out = {"type": "function_call_output", "call_id": "c", "output": "42"}
    assert key(body(input=[*history, out])).query_text is None
    assert key(body(input="   ")).query_text is None


def test_directives_and_stream_flag() -> None:
    r = key(body(stream=True), headers={"Cache-Control": "no-store"})
    assert r.stream and not r.lookup_allowed and not r.fill_allowed and not r.include_usage
    assert r.echo is not None and r.echo["metadata"] == {} and r.echo["store"] is True


def answer(text: str = "Paris.", **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_abc", "object": "response", "created_at": 1700000000, "status": "completed",
        "model": "gpt-4o-2024-08-06", "instructions": None, "metadata": {"first": "caller"}, "user": "first-user",
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "temperature": 1.0, "top_p": 1.0,
        "error": None, "incomplete_details": None,
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "easy"}]},
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": text, "annotations": []}]},
        ],
        "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15},
        **extra,
    }  # fmt: skip


def tool_answer() -> dict[str, Any]:
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather",
            "arguments": '{"city":"Paris"}', "status": "completed"}  # fmt: skip
    return answer(output=[call])


def test_which_answers_are_stored() -> None:
    tools = CachePolicy(exact=True, cache_tool_calls=True)
    assert refusal_reason(Api.RESPONSES, answer(), POLICY) is None
    assert refusal_reason(Api.RESPONSES, tool_answer(), POLICY) == "tool_calls"
    assert refusal_reason(Api.RESPONSES, tool_answer(), tools) is None
    cut = answer(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    assert refusal_reason(Api.RESPONSES, cut, POLICY) is None
    filtered = answer(status="incomplete", incomplete_details={"reason": "content_filter"})
    assert refusal_reason(Api.RESPONSES, filtered, POLICY) == "incomplete:content_filter"
    assert refusal_reason(Api.RESPONSES, answer(status="queued"), POLICY) == "status:queued"
    search = answer(output=[{"type": "web_search_call", "id": "ws_1", "status": "completed"}])
    assert refusal_reason(Api.RESPONSES, search, tools) == "server_tool:web_search_call"
    assert refusal_reason(Api.RESPONSES, answer(output=[]), POLICY) == "no_output"
    assert refusal_reason(Api.RESPONSES, {"object": "chat.completion"}, POLICY) == "not_a_response"


def events_of(stream: bytes) -> list[Any]:
    events = []
    for ev in SseParser().feed(stream):
        event = EVENTS.validate_python(orjson.loads(ev.data))
        assert ev.event == event.type
        events.append(event)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


@pytest.mark.parametrize("resp", [answer(), tool_answer(), answer("Par", status="incomplete",
                                  incomplete_details={"reason": "max_output_tokens"})])  # fmt: skip
def test_sse_replay_parses_and_round_trips(resp: dict[str, Any]) -> None:
    echo = {"metadata": {"mine": "1"}, "user": None, "store": True}
    body, ctype = replay_answer(Api.RESPONSES, resp, stream=True, echo=echo)
    assert ctype == "text/event-stream"
    events = events_of(body)
    assert events[0].type == "response.created" and events[0].response.status == "in_progress"
    assert events[-1].type == (
        "response.incomplete" if resp["status"] == "incomplete" else "response.completed"
    )
    final = events[-1].response
    assert final.id.startswith("resp_") and final.id != resp["id"] and final.created_at > resp["created_at"]
    assert final.metadata == {"mine": "1"} and final.user is None  # the asker's, not the filler's
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert text == final.output_text
    if resp is not None and resp["output"][0]["type"] == "function_call":
        assert args == resp["output"][0]["arguments"]
    # the fill of a streamed answer keeps the whole response the stream ended with
    whole = reassemble(Api.RESPONSES, body)
    assert whole is not None
    assert {**whole, "id": "x", "created_at": 0} == {**resp, "id": "x", "created_at": 0, **echo}


def test_json_replay_fresh_id_same_content() -> None:
    resp = answer()
    body, ctype = replay_answer(Api.RESPONSES, resp, stream=False, echo={"metadata": {}, "user": None})
    doc = Response.model_validate_json(body)
    assert ctype == "application/json"
    assert doc.id.startswith("resp_") and doc.id != resp["id"] and doc.output_text == "Paris."
    assert doc.metadata == {} and doc.user is None
    assert doc.usage is not None and doc.usage.total_tokens == 15
    assert resp["id"] == "resp_abc"  # the stored response is not changed


def test_reassemble_only_a_stream_that_ended_well() -> None:
    stream, _ = replay_answer(Api.RESPONSES, answer(), stream=True)
    assert reassemble(Api.RESPONSES, stream) is not None
    assert reassemble(Api.RESPONSES, stream[: stream.index(b"event: response.completed")]) is None
    error = (
        b'event: error\ndata: {"type":"error","code":"server_error","message":"x","sequence_number":3}\n\n'
    )
    assert reassemble(Api.RESPONSES, stream[: stream.index(b"event: response.completed")] + error) is None
    failed = {"type": "response.failed", "response": answer(status="failed"), "sequence_number": 9}
    assert (
        reassemble(Api.RESPONSES, b"event: response.failed\ndata: " + orjson.dumps(failed) + b"\n\n") is None
    )
    # a stream without `event:` lines is read too
    bare = b"".join(b"data: " + ev.data + b"\n\n" for ev in SseParser().feed(stream))
    assert reassemble(Api.RESPONSES, bare) == reassemble(Api.RESPONSES, stream)


class MemStore:
    """The store's two commands the cache uses, in memory."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def command(self, *args: Any, timeout_s: float = 1.0, lazy: bool = False) -> Any:
        if args[0] == "GET":
            return self.data.get(args[1])
        self.data[args[1]] = args[2]
        return b"OK"

    def send_now(self, *args: Any, timeout_s: float = 1.0) -> None:
        return None


def test_fill_then_hit_as_json_and_as_stream() -> None:
    async def run() -> None:
        cache = ResponseCache(MemStore())  # type: ignore[arg-type]
        ask = body(metadata={"first": "caller"})
        miss = key(ask)
        assert await cache.lookup(miss, POLICY) is None
        stream, _ = replay_answer(Api.RESPONSES, answer(), stream=True)
        doc = reassemble(Api.RESPONSES, stream)
        assert await cache.fill(miss, orjson.dumps(doc), POLICY)
        again = key(body(input=[{"role": "user", "content": ask["input"]}], metadata={"second": "caller"}))
        hit = await cache.lookup(again, POLICY)
        assert hit is not None and hit.kind == "exact" and hit.content_type == "application/json"
        got = Response.model_validate_json(hit.body)
        assert got.output_text == "Paris." and got.metadata == {"second": "caller"}
        hit = await cache.lookup(key(body(stream=True)), POLICY)
        assert hit is not None and hit.content_type == "text/event-stream"
        assert events_of(hit.body)[-1].response.output_text == "Paris."
        assert hit.headers["x-sidegate-cache"] == "hit-exact"
        assert not await cache.fill(key(body(input="tool?")), orjson.dumps(tool_answer()), POLICY)

    asyncio.run(run())


def test_feature_fill_from_a_stream_without_usage_takes_the_providers() -> None:
    fills: list[bytes] = []

    class Cache:
        def fill_soon(self, req: CacheRequest, response: bytes, policy: Any) -> None:
            fills.append(response)

    from sidegate import config

    cfg = config.parse({
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
        "models": {"gpt-4o": {"routes": [{"provider": "openai"}], "cache": {"exact": True}}},
    })  # fmt: skip
    feature = CacheFeature(cfg, Cache())  # type: ignore[arg-type]
    resp = answer()
    resp.pop("usage")
    stream, _ = replay_answer(Api.RESPONSES, resp, stream=True)
    meta = {"api": "responses", "model": "gpt-4o", "tenant": "acme"}
    feature.fill(
        meta, copy.deepcopy(body()), stream, True, Usage(input_tokens=7, output_tokens=2, cached_tokens=1)
    )
    (stored,) = fills
    usage = Response.model_validate_json(stored).usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (7, 2, 9)
    assert usage.input_tokens_details.cached_tokens == 1


def test_only_a_restored_redaction_skips_the_cache() -> None:
    """A body changed by the guard with restore on is skipped (the answer holds the caller's own
    values); a body changed otherwise (redacted without restore, a conversation expanded from
    `previous_response_id`) is looked up and filled, keyed on what the provider is sent."""
    from sidegate import config
    from sidegate.core.context import RequestContext
    from sidegate.features.cache.feature import PendingFills

    class Misses:
        async def lookup(self, req: CacheRequest, policy: Any, sent: Any = None) -> None:
            return None

    cfg = config.parse({
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
        "models": {"gpt-4o": {"routes": [{"provider": "openai"}], "cache": {"exact": True}}},
    })  # fmt: skip
    feature = CacheFeature(cfg, Misses(), PendingFills())  # type: ignore[arg-type]

    def run(meta: dict[str, Any]) -> dict[str, Any]:
        ctx = RequestContext(path="/v1/responses", method="POST", headers={}, api=Api.RESPONSES, tenant="acme",
                             model="gpt-4o", body=body(input="mail <EMAIL_1>"), body_changed=True, meta=meta)  # fmt: skip
        assert asyncio.run(feature.on_request(ctx)) is None
        return ctx.meta

    assert run({"restore": {"<EMAIL_1>": "a@b.example"}})["cache"] == "skip"
    meta = run({})
    assert meta["cache"] == "miss" and meta["cache_fill"]


def test_a_provider_side_conversation_is_never_cached() -> None:
    """`conversation` (passed through to a Responses provider) is state every turn appends to: the
    same input is another question each time, and a hit would skip the append."""
    r = key(body(conversation="conv_123"))
    assert not r.lookup_allowed and not r.fill_allowed
    assert key(body(conversation=None)).lookup_allowed and key(body()).fill_allowed

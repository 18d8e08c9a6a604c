"""The kept Responses answers against a real (embedded) Valkey: keeping a JSON or streamed answer,
continuing with `previous_response_id` (the expanded conversation, instructions not carried over),
tenant scoping, TTL, GET / DELETE / input_items, `store: false`, and the bounds."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidegate import config
from sidegate.core.context import Reply, RequestContext
from sidegate.core.intake import open_request
from sidegate.core.pipeline import Gateway
from sidegate.errors import Api, GatewayError
from sidegate.features.responses_store.conversation import KEY_PREFIX, store_key
from sidegate.features.responses_store.feature import KEEP, PREFIX, TURN, ResponsesStoreFeature
from sidegate.store import LeanStore, RedisPyStore, Store
from sidegate.store.redispy import client as store_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_helpers import valkey_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with valkey_server() as (url, _):
        yield url


def cfg(front: str = "ext_proc", **responses: Any) -> config.SidegateConfig:
    services = {"front": front, "auth": "inline"} if front == "http" else {"auth": "ext_authz"}
    return config.parse({
        "services": services,
        "providers": {"openai": {"api": "openai", "base_url": "https://api.openai.com"}},
        "models": {"gpt-4o": {"routes": [{"provider": "openai"}]}},
        "responses": responses,
    }, env={})  # fmt: skip


def answer(rid: str, text: str, **extra: Any) -> dict[str, Any]:
    out = [{"type": "message", "id": f"msg_{rid}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}]  # fmt: skip
    return {"id": rid, "object": "response", "created_at": 1, "status": "completed", "model": "gpt-4o",
            "output": out, "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}, **extra}  # fmt: skip


def sse(rid: str, text: str) -> bytes:
    events = [("response.created", {"type": "response.created", "response": {**answer(rid, ""), "output": [], "status": "in_progress"}}),
              ("response.output_text.delta", {"type": "response.output_text.delta", "delta": text}),
              ("response.completed", {"type": "response.completed", "response": answer(rid, text)})]  # fmt: skip
    return b"".join(b"event: " + e.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for e, d in events)


def ctx_for(method: str, path: str, tenant: str, body: dict[str, Any] | None = None) -> RequestContext:
    ctx = open_request(path, method, {}, tenant=tenant)
    assert isinstance(ctx, RequestContext)
    if body is not None:
        ctx.raw_body = orjson.dumps(body)  # as the client sent it (parse keeps the bytes too)
        ctx.body = body
        ctx.model = body.get("model", "")
    return ctx


def run(url: str, fn: Callable[[ResponsesStoreFeature, Store], Awaitable[None]], lean: bool = True,
        **kw: Any) -> None:  # fmt: skip
    async def main() -> None:
        store: Store = (LeanStore.from_url(url, store_client(url)) if lean else None) or RedisPyStore(
            store_client(url)
        )
        feature = ResponsesStoreFeature(cfg(**kw.pop("cfg", {})), store)
        try:
            await fn(feature, store)
        finally:
            await feature.close()
            await store.aclose()

    asyncio.run(main())


async def turn(f: ResponsesStoreFeature, tenant: str, body: dict[str, Any], reply: bytes | None,
               streamed: bool = False) -> RequestContext:  # fmt: skip
    """One POST /v1/responses through the feature: its request hook, then the try's fill."""
    ctx = ctx_for("POST", "/v1/responses", tenant, body)
    f.prefetch(ctx)
    assert await f.on_request(ctx) is None
    meta = ctx.upstream_meta()
    if meta.get(KEEP) and reply is not None:
        f.fill(meta, ctx.body, reply, streamed)
        await f.drain()
    return ctx


async def get(f: ResponsesStoreFeature, tenant: str, path: str, method: str = "GET") -> tuple[int, Any]:
    try:
        reply = await f.on_request(ctx_for(method, path, tenant))
    except GatewayError as err:
        return err.status, err
    assert reply is not None
    return reply.status, orjson.loads(reply.body)


@pytest.mark.parametrize("lean", [True, False])
def test_a_kept_answer_continues_the_conversation(redis_url: str, lean: bool) -> None:
    async def body(f: ResponsesStoreFeature, store: Store) -> None:
        t = f"acme-{lean}"
        await turn(f, t, {"model": "gpt-4o", "input": "My name is Ada.", "instructions": "Be terse."},
                   orjson.dumps(answer("resp_1", "Hi Ada.")))  # fmt: skip
        ctx = await turn(f, t, {"model": "gpt-4o", "input": [{"role": "user", "content": "Name?"}],
                                "previous_response_id": "resp_1"}, orjson.dumps(answer("resp_2", "Ada.")))  # fmt: skip
        assert ctx.body_changed and "previous_response_id" not in ctx.body
        assert "instructions" not in ctx.body  # not carried over (OpenAI's rule)
        texts = [
            (i.get("role"), i["content"] if isinstance(i["content"], str) else i["content"][0]["text"])
            for i in ctx.body["input"]
        ]
        assert texts == [("user", "My name is Ada."), ("assistant", "Hi Ada."), ("user", "Name?")]
        # the third turn sees all of it, from the second answer's record alone
        ctx3 = await turn(
            f,
            t,
            {"model": "gpt-4o", "input": "Again?", "previous_response_id": "resp_2", "store": False},
            b"",
        )
        assert len(ctx3.body["input"]) == 5 and ctx3.meta == {} and len(f.turns) == 0  # nothing held
        status, got = await get(f, t, "/v1/responses/resp_2")
        assert status == 200 and got["id"] == "resp_2" and got["previous_response_id"] == "resp_1"
        assert got["output"][0]["content"][0]["text"] == "Ada."
        first = await get(f, t, "/v1/responses/resp_1")
        assert first[1]["instructions"] == "Be terse."

    run(redis_url, body, lean=lean)


def test_another_tenants_id_is_a_404_everywhere(redis_url: str) -> None:
    async def body(f: ResponsesStoreFeature, store: Store) -> None:
        await turn(
            f, "acme", {"model": "gpt-4o", "input": "secret plan"}, orjson.dumps(answer("resp_a", "ok"))
        )
        for path, method in (("/v1/responses/resp_a", "GET"), ("/v1/responses/resp_a/input_items", "GET"),
                             ("/v1/responses/resp_a", "DELETE")):  # fmt: skip
            status, err = await get(f, "globex", path, method)
            assert status == 404 and "resp_a" in err.message
        with pytest.raises(GatewayError) as err:
            await turn(f, "globex", {"model": "gpt-4o", "input": "x", "previous_response_id": "resp_a"}, b"")
        assert (err.value.status, err.value.param, err.value.code) == (
            404,
            "previous_response_id",
            "previous_response_not_found",
        )
        assert (await get(f, "acme", "/v1/responses/resp_a"))[0] == 200  # still there for its owner

    run(redis_url, body)


def test_ttl_and_key_and_delete(redis_url: str) -> None:
    async def body(f: ResponsesStoreFeature, store: Store) -> None:
        await turn(f, "acme", {"model": "gpt-4o", "input": "hi"}, orjson.dumps(answer("resp_ttl", "hello")))
        key = store_key("acme", "resp_ttl")
        assert key.startswith(KEY_PREFIX) and "acme" in key
        ttl = await store.redis.ttl(key)
        assert 3500 < ttl <= 3600
        status, got = await get(f, "acme", "/v1/responses/resp_ttl", "DELETE")
        assert status == 200 and got == {"id": "resp_ttl", "object": "response", "deleted": True}
        assert await store.redis.exists(key) == 0
        assert (await get(f, "acme", "/v1/responses/resp_ttl", "DELETE"))[0] == 404
        assert (await get(f, "acme", "/v1/responses/resp_ttl"))[0] == 404

    run(redis_url, body, cfg={"ttl_s": 3600})


def test_store_false_keeps_nothing_and_a_stream_keeps_its_completed_event(redis_url: str) -> None:
    async def body(f: ResponsesStoreFeature, store: Store) -> None:
        ctx = await turn(f, "acme", {"model": "gpt-4o", "input": "x", "store": False}, b"")
        assert ctx.meta == {} and not ctx.body_changed and len(f.turns) == 0
        await turn(
            f,
            "acme",
            {"model": "gpt-4o", "input": "stream me", "stream": True},
            sse("resp_s", "streamed!"),
            streamed=True,
        )
        status, got = await get(f, "acme", "/v1/responses/resp_s")
        assert status == 200 and got["output"][0]["content"][0]["text"] == "streamed!"
        # an unfinished stream (no response.completed) keeps nothing
        await turn(
            f,
            "acme",
            {"model": "gpt-4o", "input": "cut"},
            sse("resp_cut", "x").rsplit(b"event: response.completed", 1)[0],
            streamed=True,
        )
        assert (await get(f, "acme", "/v1/responses/resp_cut"))[0] == 404
        assert len(f.turns) == 0  # every turn let go

    run(redis_url, body)


def test_input_items_pages_like_openai(redis_url: str) -> None:
    async def body(f: ResponsesStoreFeature, store: Store) -> None:
        items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
        await turn(f, "acme", {"model": "gpt-4o", "input": items}, orjson.dumps(answer("resp_l", "ok")))
        status, page = await get(f, "acme", "/v1/responses/resp_l/input_items?limit=2&order=asc")
        assert status == 200 and page["object"] == "list" and page["has_more"]
        assert [d["content"][0] for d in page["data"]] == [
            {"type": "input_text", "text": "m0"},
            {"type": "input_text", "text": "m1"},
        ]
        assert page["data"][0]["type"] == "message" and page["first_id"] == page["data"][0]["id"]
        nxt = (
            await get(
                f, "acme", f"/v1/responses/resp_l/input_items?limit=2&order=asc&after={page['last_id']}"
            )
        )[1]
        assert [d["content"][0]["text"] for d in nxt["data"]] == ["m2", "m3"]
        desc = (await get(f, "acme", "/v1/responses/resp_l/input_items"))[1]  # desc, 20 by default
        assert [d["content"][0]["text"] for d in desc["data"]] == ["m4", "m3", "m2", "m1", "m0"] and not desc[
            "has_more"
        ]
        assert (await get(f, "acme", "/v1/responses/resp_l/input_items?limit=101"))[0] == 400
        assert (await get(f, "acme", "/v1/responses/resp_l/input_items", "DELETE"))[0] == 405

    run(redis_url, body)


def test_too_large_conversations_are_served_not_kept(redis_url: str) -> None:
    async def body(f: ResponsesStoreFeature, store: Store) -> None:
        big = await turn(f, "acme", {"model": "gpt-4o", "input": "x" * 3000}, None)
        assert big.meta == {}  # known too large at once: nothing held, no try asked to collect
        fits = {"model": "gpt-4o", "input": "x" * 1500}
        await turn(f, "acme", fits, orjson.dumps(answer("resp_big", "y" * 600)))
        assert (await get(f, "acme", "/v1/responses/resp_big"))[
            0
        ] == 404  # the record, with its answer, is over
        assert f.fill_bound({}) == 2048

    run(redis_url, body, cfg={"max_bytes": 2048})


def test_the_http_front_prepends_in_each_try(redis_url: str) -> None:
    """The HTTP front cannot rewrite the body: every try (a fallback's too) prepends the earlier
    conversation itself; a body the gateway already rewrote (the try lane's first try) is left alone."""

    async def body(_: ResponsesStoreFeature, store: Store) -> None:
        f = ResponsesStoreFeature(cfg("http"), store)
        await turn(f, "acme", {"model": "gpt-4o", "input": "one"}, orjson.dumps(answer("resp_h1", "two")))
        client = {"model": "gpt-4o", "input": "three", "previous_response_id": "resp_h1"}
        ctx = await turn(f, "acme", orjson.loads(orjson.dumps(client)), None)  # (no fill yet)
        meta = ctx.upstream_meta()
        assert meta[PREFIX] and meta[TURN]
        for _ in range(2):  # the first try and its fallback, each from the client's body
            sent = orjson.loads(orjson.dumps(client))
            hook = f.on_try(meta, Api.RESPONSES)
            assert hook is not None
            hook.request(sent)
            assert "previous_response_id" not in sent and len(sent["input"]) == 3
        rewritten = {"model": "gpt-4o", "input": ctx.body["input"]}
        hook.request(rewritten)
        assert len(rewritten["input"]) == 3
        f.fill(meta, client, orjson.dumps(answer("resp_h2", "four")), False)
        await f.drain()
        record = orjson.loads(await store.command("GET", store_key("acme", "resp_h2")))
        assert len(record["input"]) == 3 and len(f.turns) == 0
        await f.close()

    run(redis_url, body)


def test_refusals() -> None:
    async def body() -> None:
        f = ResponsesStoreFeature(cfg(), RedisPyStore(store_client("redis://127.0.0.1:1/0")))
        with pytest.raises(GatewayError) as err:
            await f.on_request(
                ctx_for(
                    "POST",
                    "/v1/responses",
                    "acme",
                    {"model": "gpt-4o", "input": "x", "previous_response_id": 7},
                )
            )
        assert err.value.status == 400 and err.value.param == "previous_response_id"
        with pytest.raises(GatewayError) as err:
            await f.on_request(ctx_for("GET", "/v1/responses/resp_x", ""))
        assert err.value.status == 401
        reply = await f.on_request(ctx_for("GET", "/v1/responses/resp_x/cancel", "acme"))
        assert reply is not None and reply.status == 404
        with pytest.raises(GatewayError) as err:
            await f.on_request(ctx_for("PUT", "/v1/responses/resp_x", "acme"))
        assert err.value.status == 405
        with pytest.raises(GatewayError) as err:  # a kept answer has no events to replay
            await f.on_request(ctx_for("GET", "/v1/responses/resp_x?stream=true", "acme"))
        assert (err.value.status, err.value.param) == (400, "stream")
        with pytest.raises(GatewayError) as err:  # the store unreachable: a 503, never a false 404
            await f.on_request(
                ctx_for(
                    "POST", "/v1/responses", "acme", {"model": "gpt-4o", "previous_response_id": "resp_x"}
                )
            )
        assert err.value.status == 503
        # chat and messages requests are not this feature's
        chat = ctx_for("POST", "/v1/chat/completions", "acme", {"model": "gpt-4o", "messages": []})
        assert await f.on_request(chat) is None and chat.meta == {}

    asyncio.run(body())


def test_the_feature_sits_after_route_and_before_guard_quota_and_cache() -> None:
    """So the expanded conversation is what is redacted, estimated and cached; and only with a store."""
    from sidegate.app import default_features
    from sidegate.core.feature import collect

    c = cfg()
    store = RedisPyStore(store_client("redis://127.0.0.1:1/0"))
    hooks = collect(default_features(c, store))
    names = [s.name for s in hooks.steps_by_api[("completions", Api.RESPONSES)]]
    for other in (Api.OPENAI, Api.ANTHROPIC):  # chat and Messages never meet it, not even a no-op step
        assert "responses_store" not in [s.name for s in hooks.steps_by_api[("completions", other)]]
    assert names.index("route") < names.index("responses_store") < names.index("guard") < names.index("quota")
    assert "responses_store" not in [f.name for f in default_features(c)]  # no store: off
    off = config.parse(
        {**c.model_dump(mode="json", exclude_unset=True), "responses": {"store": False}}, env={}
    )
    assert "responses_store" not in [f.name for f in default_features(off, store)]
    stored = [s.name for s in collect(default_features(c, store)).steps_by_endpoint["stored_response"]]
    assert stored == ["responses_store"]  # no quota, no cache, no lane for GET / DELETE


class CacheHit:
    """Stands in for the cache: every Responses request is a hit, answered by the gateway."""

    name = "cache"
    endpoints = frozenset({"completions"})

    async def on_request(self, ctx: RequestContext) -> Reply:
        body = orjson.dumps(answer("resp_hit", "from the cache"))
        return Reply(200, body, {"content-type": "application/json"}, "cache")


def test_a_cache_hit_is_kept_too(redis_url: str) -> None:
    """The gateway's own answer (a cache hit, with its fresh id) is continued like any other."""

    async def body(f: ResponsesStoreFeature, store: Store) -> None:
        gateway = Gateway([f, CacheHit()])
        ctx = ctx_for("POST", "/v1/responses", "acme", {"model": "gpt-4o", "input": "cached?"})
        out = await gateway.run(ctx)
        assert isinstance(out, Reply) and out.source == "cache"
        await f.drain()
        status, got = await get(f, "acme", "/v1/responses/resp_hit")
        assert status == 200 and got["output"][0]["content"][0]["text"] == "from the cache"
        assert len(f.turns) == 0
        refused = ctx_for("POST", "/v1/responses", "acme", {"model": "gpt-4o", "input": "no", "store": False})
        await gateway.run(refused)
        assert len(f.turns) == 0

    run(redis_url, body)


def test_a_request_that_ends_without_an_answer_lets_go_of_its_turn(redis_url: str) -> None:
    """A final failed try (or a gateway answer) releases what the request held; a retried one does
    not (the fallback's try still needs it); a try on another worker of the HTTP front cannot
    prepend what it does not hold: a 503 in OpenAI's words, never half a conversation."""
    from sidegate.core.completion import Completion
    from sidegate.features.responses_store.feature import PrependTry

    async def body(_: ResponsesStoreFeature, store: Store) -> None:
        f = ResponsesStoreFeature(cfg("http"), store)
        await turn(f, "acme", {"model": "gpt-4o", "input": "one"}, orjson.dumps(answer("resp_r1", "two")))
        ctx = await turn(
            f, "acme", {"model": "gpt-4o", "input": "3", "previous_response_id": "resp_r1"}, None
        )
        meta = ctx.upstream_meta()

        def done(status: int, final: bool) -> Completion:
            return Completion(meta=meta, provider="openai", upstream_model="gpt-4o", status=status, usage=None,
                              final=final, streamed=False, attempt=1)  # fmt: skip

        f.on_complete(done(503, final=False))
        assert len(f.turns) == 1 and f.on_try(meta, Api.RESPONSES) is not None
        f.on_complete(done(200, final=True))  # kept: its fill (next) lets go
        assert len(f.turns) == 1
        f.on_complete(done(502, final=True))
        assert len(f.turns) == 0
        with pytest.raises(GatewayError) as err:
            PrependTry(None).request({"input": "x", "previous_response_id": "resp_r1"})
        assert err.value.status == 503
        await f.close()

    run(redis_url, body)


def test_an_unreadable_record_is_absent(redis_url: str) -> None:
    async def body(f: ResponsesStoreFeature, store: Store) -> None:
        await store.command("SET", store_key("acme", "resp_bad"), b"not json")
        assert (await get(f, "acme", "/v1/responses/resp_bad"))[0] == 404
        with pytest.raises(GatewayError) as err:
            await turn(f, "acme", {"model": "gpt-4o", "input": "x", "previous_response_id": "resp_bad"}, None)
        assert err.value.status == 404

    run(redis_url, body)


def test_the_answer_of_a_stream_is_its_terminal_event_named_or_not() -> None:
    from sidegate.features.responses_store.conversation import answer_of

    done = orjson.dumps(
        {"sequence_number": 9, "type": "response.completed", "response": answer("resp_u", "hi")}
    )
    unnamed = (
        b"data: "
        + orjson.dumps({"type": "response.output_text.delta", "delta": '"response.completed"'})
        + b"\n\n"
    )
    got = answer_of(unnamed + b"data: " + done + b"\n\n", streamed=True)
    assert got is not None and got["id"] == "resp_u"
    failed = orjson.dumps(
        {"type": "response.failed", "response": {**answer("resp_f", ""), "status": "failed"}}
    )
    assert answer_of(unnamed + b"event: response.failed\ndata: " + failed + b"\n\n", streamed=True) is None
    assert answer_of(b'{"id": "resp_x"}', streamed=False) is None  # no output items: not an answer

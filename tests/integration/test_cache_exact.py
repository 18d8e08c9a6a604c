"""Exact cache against a real valkey-server and a real 3-node store cluster: hits, misses by scope,
directives, limits, expiry, outages."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import orjson
import pytest
from openai.types.chat import ChatCompletionChunk
from redis.asyncio import Redis

from sidegate.config.storeurl import is_cluster_url
from sidegate.errors import Api
from sidegate.features.cache import CachePolicy, ResponseCache
from sidegate.sse import SseParser
from sidegate.store import ClusterStore, LeanStore, RedisPyStore, Store
from sidegate.store.redispy import client as store_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_helpers import anthropic_response, openai_response, openai_tool_response, req, valkey_server
from cluster_helpers import running_cluster

POLICY = CachePolicy(exact=True, ttl_s=60)


@pytest.fixture(scope="module", params=["valkey", "cluster"])
def redis_url(request):
    """Every test that takes the store's URL runs on one server and on a 3-node cluster."""
    if request.param == "cluster":
        with running_cluster() as c:
            yield c.url
        return
    with valkey_server() as (url, _):
        yield url


def run(coro_fn, url: str, fast: bool = False):
    """`coro_fn(cache, redis)`; `fast`: the per-request GET/SET on the lean client (as in extproc)."""

    async def main():
        redis = store_client(url)
        lean: Store | None = None
        if fast:
            lean = (ClusterStore.from_url if is_cluster_url(url) else LeanStore.from_url)(url, store_client(url))
        store: Store = lean or RedisPyStore(store_client(url))
        try:
            return await coro_fn(ResponseCache(store), redis)
        finally:
            await redis.aclose()
            await store.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("fast", [False, True])
def test_exact_hit_json_and_stream(redis_url, fast):
    async def body(cache: ResponseCache, _: Redis):
        r = req(tenant=f"t-hit-{fast}")
        assert await cache.lookup(r, POLICY) is None
        assert await cache.fill(r, orjson.dumps(openai_response()), POLICY)
        hit = await cache.lookup(req(tenant=f"t-hit-{fast}"), POLICY)
        assert hit is not None and hit.kind == "exact" and hit.similarity == 1.0
        assert hit.content_type == "application/json" and not hit.provider_tokens_used
        out = orjson.loads(hit.body)
        assert out["choices"][0]["message"]["content"] == "Paris." and out["id"] != "chatcmpl-abc123"
        assert hit.usage == {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}
        assert hit.headers["x-sidegate-cache"] == "hit-exact"
        # The same question asked with stream=true is served as SSE from the same entry.
        s = await cache.lookup(
            req(tenant=f"t-hit-{fast}", stream=True, stream_options={"include_usage": True}), POLICY
        )
        assert s is not None and s.content_type == "text/event-stream"
        events = SseParser().feed(s.body)
        assert events[-1].data == b"[DONE]"
        chunks = [ChatCompletionChunk.model_validate_json(e.data) for e in events[:-1]]
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 22
        assert cache.stats.hits_exact == 2 and cache.stats.misses == 1

    run(body, redis_url, fast)


def test_prefetched_get_serves_the_lookup(redis_url):
    """The cache stage's prefetch: the GET sent before the quota stage runs, awaited by lookup();
    one never awaited (the quota refused the request) leaves no trace; none for a bypass."""

    async def body(cache: ResponseCache, _: Redis):
        assert cache.prefetch(req(tenant="t-pre"), POLICY) is None  # not connected yet: lookup sends its own
        assert await cache.lookup(req(tenant="t-pre"), POLICY) is None
        assert await cache.fill(req(tenant="t-pre"), orjson.dumps(openai_response()), POLICY)
        r = req(tenant="t-pre")
        sent = cache.prefetch(r, POLICY)
        assert sent is not None
        hit = await cache.lookup(r, POLICY, sent)
        assert hit is not None and hit.kind == "exact"
        miss = req(tenant="t-pre-other")
        assert await cache.lookup(miss, POLICY, cache.prefetch(miss, POLICY)) is None
        cache.prefetch(req(tenant="t-pre"), POLICY)  # never awaited
        bypass = req(tenant="t-pre", headers={"cache-control": "no-cache"})
        assert cache.prefetch(bypass, POLICY) is None
        await asyncio.sleep(0.05)
        assert cache.stats.hits_exact == 1 and cache.stats.misses == 2

    run(body, redis_url, fast=True)


def test_scope_misses(redis_url):
    async def body(cache: ResponseCache, _: Redis):
        await cache.fill(req(tenant="t-scope", temperature=0), orjson.dumps(openai_response()), POLICY)
        assert await cache.lookup(req(tenant="t-scope", temperature=0), POLICY) is not None
        assert await cache.lookup(req(tenant="t-other", temperature=0), POLICY) is None
        assert await cache.lookup(req(tenant="t-scope", temperature=0, model="gpt-4o"), POLICY) is None
        assert await cache.lookup(req(tenant="t-scope", temperature=0.7), POLICY) is None
        assert (
            await cache.lookup(req(tenant="t-scope", temperature=0, reasoning_effort="high"), POLICY) is None
        )
        assert await cache.lookup(req(Api.ANTHROPIC, tenant="t-scope", temperature=0), POLICY) is None

    run(body, redis_url)


def test_directives_temperature_gate_and_limits(redis_url):
    async def body(cache: ResponseCache, redis: Redis):
        resp = orjson.dumps(openai_response())
        # no-cache: skip the lookup, still refresh the entry.
        nc = req(tenant="t-dir", headers={"cache-control": "no-cache"})
        assert await cache.fill(nc, resp, POLICY)
        assert await cache.lookup(nc, POLICY) is None and cache.stats.bypassed == 1
        assert await cache.lookup(req(tenant="t-dir"), POLICY) is not None
        # no-store: neither.
        ns = req(tenant="t-dir2", headers={"x-sidegate-cache": "no-store"})
        assert not await cache.fill(ns, resp, POLICY)
        assert await cache.lookup(req(tenant="t-dir2"), POLICY) is None
        # Temperature above the route's max: not stored.
        cold = CachePolicy(exact=True, max_temperature=0.5)
        assert not await cache.fill(req(tenant="t-dir3"), resp, cold)  # absent temperature = 1.0
        assert await cache.fill(req(tenant="t-dir3", temperature=0.5), resp, cold)
        # Size limit, tool calls, non-success.
        big = orjson.dumps(openai_response(text="x" * 5000))
        assert not await cache.fill(req(tenant="t-big"), big, CachePolicy(exact=True, max_entry_bytes=4096))
        assert await cache.fill(req(tenant="t-big"), big, POLICY)  # compressed in the store
        stored = await redis.get(cache.prefix + req(tenant="t-big").exact_key)
        assert len(stored) < len(big) / 4
        hit = await cache.lookup(req(tenant="t-big"), POLICY)
        assert orjson.loads(hit.body)["choices"][0]["message"]["content"] == "x" * 5000
        tools = orjson.dumps(openai_tool_response())
        assert not await cache.fill(req(tenant="t-tools"), tools, POLICY)
        assert await cache.fill(req(tenant="t-tools"), tools, CachePolicy(exact=True, cache_tool_calls=True))
        assert not await cache.fill(req(tenant="t-err"), b'{"error":{"message":"x"}}', POLICY)
        assert not await cache.fill(req(tenant="t-err"), b"not json", POLICY)
        a = req(Api.ANTHROPIC, tenant="t-err")
        assert not await cache.fill(a, orjson.dumps(anthropic_response(stop="refusal")), POLICY)
        assert dict(cache.stats.fills_skipped) == {
            "no_store": 1, "policy": 1, "too_big": 1, "finish_reason": 1, "error": 1, "not_json": 1, "stop_reason": 1,
        }  # fmt: skip

    run(body, redis_url)


def test_expiry(redis_url):
    async def body(cache: ResponseCache, _: Redis):
        short = CachePolicy(exact=True, ttl_s=1)
        await cache.fill(req(tenant="t-exp"), orjson.dumps(openai_response()), short)
        assert await cache.lookup(req(tenant="t-exp"), short) is not None
        await asyncio.sleep(1.2)
        assert await cache.lookup(req(tenant="t-exp"), short) is None

    run(body, redis_url)


@pytest.mark.alone  # bounds a duration
@pytest.mark.parametrize("fast", [False, True])
def test_store_down_and_hung_is_a_bounded_miss(fast):
    with valkey_server() as (url, proc):

        async def body(cache: ResponseCache, _: Redis):
            policy = CachePolicy(exact=True, exact_timeout_ms=50)
            await cache.fill(req(tenant="t-down"), orjson.dumps(openai_response()), policy)
            os.kill(proc.pid, signal.SIGSTOP)  # hung store: accepts bytes, never answers
            try:
                t = time.perf_counter()
                assert await cache.lookup(req(tenant="t-down"), policy) is None
                r = req(tenant="t-down")
                assert await cache.lookup(r, policy, cache.prefetch(r, policy)) is None
                assert time.perf_counter() - t < 0.5
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(timeout=5)
            t = time.perf_counter()
            assert await cache.lookup(req(tenant="t-down"), policy) is None
            assert not await cache.fill(req(tenant="t-down"), orjson.dumps(openai_response()), policy)
            assert time.perf_counter() - t < 1.0
            assert cache.stats.store_errors >= 2 and cache.stats.fill_errors == 1

        run(body, url, fast)

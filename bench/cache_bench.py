"""Response-cache micro-benchmark on loopback: key build, exact lookup, embedding, semantic lookup.

    /tmp/venv/bin/python bench/cache_bench.py [--n 500] [--points 1000] [--store memory|qdrant] [--client redis-py|lean]

Starts its own valkey-server (embedded binary), uses the real embedding model and Qdrant local mode
(in memory). Prints p50/p99 per step and the latency a semantic miss adds to a request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cache_helpers import openai_body, openai_response, valkey_server

from sidegate.errors import Api
from sidegate.features.cache import CachePolicy, CacheRequest, ResponseCache, SemanticIndex, SemanticSettings
from sidegate.store import LeanStore, RedisPyStore
from sidegate.store.redispy import client as store_client


def pct(samples: list[float]) -> str:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return f"p50 {statistics.median(s):9.3f}  p99 {p99:9.3f}"


async def timed(n: int, fn: Callable[[int], Awaitable[object]], scale: float) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await fn(i)
        out.append((time.perf_counter() - t) * scale)
    return out


def mk(i: int, tenant: str = "bench", question: str | None = None) -> CacheRequest:
    body = openai_body(question or f"What is the capital of country number {i}?", temperature=0)
    return CacheRequest.from_body(Api.OPENAI, tenant, "gpt-4o-mini", body, {})


async def main(n: int, points: int, store: str, client: str = "redis-py") -> None:
    with valkey_server() as (url, _):
        redis = store_client(url)
        index = SemanticIndex(SemanticSettings(vector_store=store))
        t = time.perf_counter()
        await index.start()
        print(f"model load + collection: {(time.perf_counter() - t) * 1000:.0f} ms")
        lean = LeanStore.from_url(url, store_client(url)) if client == "lean" else None
        cache = ResponseCache(lean or RedisPyStore(redis), semantic=index)
        exact = CachePolicy(exact=True, ttl_s=600)
        sem = CachePolicy(exact=True, semantic=True, ttl_s=600, semantic_timeout_ms=1000)
        resp = orjson.dumps(openai_response(text="Paris is the capital of France. " * 8))

        body = openai_body(temperature=0)
        key_us = []
        for _ in range(n):
            t = time.perf_counter()
            CacheRequest.from_body(Api.OPENAI, "bench", "gpt-4o-mini", body, {})
            key_us.append((time.perf_counter() - t) * 1e6)
        print(f"CacheRequest.from_body          µs  {pct(key_us)}")

        for i in range(n):
            await cache.fill(mk(i), resp, exact)
        print(
            f"exact lookup, hit               µs  {pct(await timed(n, lambda i: cache.lookup(mk(i), exact), 1e6))}"
        )
        miss = await timed(n, lambda i: cache.lookup(mk(i, tenant="nobody"), exact), 1e6)
        print(f"exact lookup, miss              µs  {pct(miss)}")

        emb = index.embedder
        texts = [f"What is the capital of country number {i}?" for i in range(n)]
        emb_ms = []
        for tx in texts[: min(n, 300)]:
            t = time.perf_counter()
            emb.embed([tx])
            emb_ms.append((time.perf_counter() - t) * 1e3)
        print(f"embedding (1 short text)        ms  {pct(emb_ms)}")

        # Background points in other scopes, so the search sees a populated collection.
        rng = np.random.default_rng(0)
        vecs = rng.normal(size=(points, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        t = time.perf_counter()
        for i, v in enumerate(vecs):
            index.store.upsert(f"s{i % 50}", uuid.uuid4().hex * 2, v.tolist(), time.time() + 600)
        print(f"{points} background points in 50 other scopes: {time.perf_counter() - t:.1f} s to insert")
        m = min(n, 200)
        for i in range(m):
            await cache.fill(mk(i, tenant="sem"), resp, sem)  # embeds + indexes
        print(f"store holds {index.store.count()} points ({store} store)")

        def paraphrase(i: int) -> CacheRequest:
            return mk(i, tenant="sem", question=f"What's the capital of country number {i}?")

        hits = await timed(m, lambda i: cache.lookup(paraphrase(i), sem), 1e3)
        print(f"semantic lookup, hit (total)    ms  {pct(hits)}   hits={cache.stats.hits_semantic}/{m}")
        fresh = await timed(m, lambda i: cache.lookup(mk(i, tenant="sem-miss"), sem), 1e3)
        exact_only = await timed(m, lambda i: cache.lookup(mk(i, tenant="sem-miss"), exact), 1e3)
        print(f"miss, exact + semantic          ms  {pct(fresh)}")
        print(f"miss, exact only                ms  {pct(exact_only)}")
        added = statistics.median(fresh) - statistics.median(exact_only)
        print(f"a semantic miss adds ~{added:.2f} ms (p50) to a request")
        vec = emb.embed(["x"])[0]
        q = await timed(m, lambda i: index.search("s1", "x", threshold=0.95, timeout_s=1, vector=vec), 1e3)
        print(f"vector search, 20-point scope   ms  {pct(q)}")
        print("stats:", {k: v for k, v in cache.stats.as_dict().items() if v})
        index.close()
        await redis.aclose()
        if lean is not None:
            await lean.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--store", choices=["memory", "qdrant"], default="memory")
    ap.add_argument("--client", choices=["redis-py", "lean"], default="redis-py", help="the store client")
    a = ap.parse_args()
    asyncio.run(main(max(10, min(a.n, 5000)), max(0, min(a.points, 100_000)), a.store, a.client))

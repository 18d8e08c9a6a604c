"""Quota costs: reserve+settle round trips against a local Valkey, and prompt tokenization.

Run: /tmp/venv/bin/python bench/quota_bench.py [--requests N] [--concurrency C] [--url redis://...]
     [--client redis-py|lean]
Starts the embedded valkey-server on a free loopback port unless --url is given. Each request
reserves against three scopes (tenant, key, tenant+model with rpm, tpm and budgets) and settles.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time

from redis.asyncio import BlockingConnectionPool, Redis

from sidegate.features.quota import Limits, QuotaStore, Scope, TokenCounter
from sidegate.features.quota.tokens import cl100k
from sidegate.ports import free_port, wait_for_port
from sidegate.store import LeanStore, RedisPyStore
from sidegate.store.valkey import valkey_binary

WORDS = "Please summarise the quarterly report and list three risks with a short mitigation for each. "


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def bench_store(url: str, requests: int, concurrency: int, lean: bool = False) -> None:
    pool = BlockingConnectionPool.from_url(url, max_connections=max(concurrency, 1), timeout=5,
                                           socket_timeout=1.0, socket_connect_timeout=1.0)  # fmt: skip
    redis = Redis(connection_pool=pool)
    client = LeanStore.from_url(url, redis) if lean else None  # as extproc runs it
    store = QuotaStore(client or RedisPyStore(redis), op_timeout_s=5.0)
    await store.load_scripts()
    big = Limits(rpm=10**9, tpm=10**12, daily_usd=10**6, monthly_usd=10**7)
    scopes = [Scope("tenant:bench", big), Scope("key:k_bench", big), Scope("model:bench:gpt-4o", big)]

    async def one(i: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        d = await store.reserve("bench", scopes, 1200, f"b{i}")
        t1 = time.perf_counter()
        await store.settle(d, 900, 0.0042)
        t2 = time.perf_counter()
        if not d.admitted or d.degraded:
            raise RuntimeError("bench request not admitted")
        return (t1 - t0) * 1e6, (t2 - t0) * 1e6

    for i in range(min(200, requests)):  # warm up
        await one(-i - 1)
    seq = [await one(i) for i in range(requests)]
    res = [r for r, _ in seq]
    both = [b for _, b in seq]
    print(
        f"sequential   reserve         p50 {pct(res, 50):7.0f} us   p99 {pct(res, 99):7.0f} us   (n={requests})"
    )
    print(f"sequential   reserve+settle  p50 {pct(both, 50):7.0f} us   p99 {pct(both, 99):7.0f} us")

    sem = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> tuple[float, float]:
        async with sem:
            return await one(requests + i)

    t0 = time.perf_counter()
    conc = await asyncio.gather(*(limited(i) for i in range(requests)))
    wall = time.perf_counter() - t0
    both = [b for _, b in conc]
    print(f"concurrency {concurrency:3d} reserve+settle  p50 {pct(both, 50):7.0f} us   p99 {pct(both, 99):7.0f} us   "
          f"{requests / wall:,.0f} req/s (one client process)")  # fmt: skip
    stats = await redis.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    if evalsha:
        print(
            f"server-side  EVALSHA (reserve and settle, 3 scopes) {evalsha['usec_per_call']:.1f} us per call"
        )
    await redis.aclose()


def bench_tokens(rounds: int = 7) -> None:
    counter = TokenCounter()
    enc = cl100k()
    for target in (1_000, 10_000, 100_000):
        text = WORDS * (target // len(enc.encode_ordinary(WORDS)) + 1)
        body = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": text}]}  # fmt: skip
        tokens = counter.openai_chat(body)
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            counter.openai_chat(body)
            samples.append(time.perf_counter() - t0)
        per_1k = statistics.median(samples) * 1e6 / (tokens / 1000)
        print(
            f"tokenize ~{tokens:>7,} prompt tokens: {statistics.median(samples) * 1e3:7.2f} ms  = {per_1k:6.1f} us / 1k tokens"
        )
    small = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    t0 = time.perf_counter()
    for _ in range(2000):
        counter.openai_chat(small)
    print(f"tokenize a 1-message chat: {(time.perf_counter() - t0) / 2000 * 1e6:.1f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--url", default=None)
    ap.add_argument("--client", choices=["redis-py", "lean"], default="redis-py", help="the store client")
    a = ap.parse_args()
    a.requests = max(1, min(a.requests, 100_000))
    bench_tokens()
    if a.url:
        asyncio.run(bench_store(a.url, a.requests, a.concurrency, a.client == "lean"))
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sg-quota-bench-") as d:
        cmd = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", d]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", port, timeout_s=10, proc=proc)
            asyncio.run(bench_store(f"redis://127.0.0.1:{port}/0", a.requests, a.concurrency, a.client == "lean"))
        finally:
            proc.kill()
            proc.wait(timeout=5)


if __name__ == "__main__":
    main()

"""Soak: moderate mixed load on a whole local stack for N minutes; watch memory and errors.

    python bench/soak.py [--minutes 10] [--rps 40] [--workers 16]

Starts Valkey + authz + extproc + Envoy (tests/harness.py) and two fake providers, then sends a
paced mix of requests (OpenAI and Anthropic clients, same-API and translated routes, streaming and
not, exact-cache hits, a few client aborts mid-stream). Prints the RSS of every process at the start
(after a warm-up) and once a minute, then the totals: requests, errors by kind, latency p50/p99 and
RSS growth per process. Exit code 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from harness import Stack  # noqa: E402

from sidegate.fakes import FakeProviderThread  # noqa: E402

EXTRA = {
    "models": {
        "gpt-4o-mini": {"routes": [{"provider": "openai"}], "cache": {"exact": True}},
        "claude-haiku": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
    },
    "observability": {"access_log": None},  # keep the log files small over long runs
}
# (weight, client api, model, stream, cached question, abort mid-stream)
MIX = [
    (30, "openai", "gpt-4o-mini", False, False, False),
    (15, "openai", "gpt-4o-mini", True, False, False),
    (15, "openai", "gpt-4o-mini", False, True, False),
    (10, "openai", "claude-haiku", True, False, False),
    (15, "anthropic", "claude-haiku", True, False, False),
    (10, "anthropic", "gpt-4o-mini", False, False, False),
    (5, "openai", "gpt-4o-mini", True, False, True),
]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def processes(stack: Stack) -> dict[str, int]:
    assert stack.sup is not None
    out = {c.name: c.proc.pid for c in stack.sup.children if c.proc is not None}
    out["soak+fakes"] = os.getpid()
    return out


def rss_line(procs: dict[str, int]) -> str:
    return "  ".join(f"{n}={rss_kib(p) / 1024:.1f}MiB" for n, p in procs.items())


class Soak:
    def __init__(self, stack: Stack, rps: float, workers: int):
        self.stack = stack
        self.interval = workers / rps
        self.workers = workers
        self.latencies: list[float] = []
        self.ok = 0
        self.aborted = 0
        self.errors: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.weights = [m[0] for m in MIX]

    async def one(self, client: aiohttp.ClientSession, rng: random.Random) -> None:
        _, api, model, stream, cached, abort = rng.choices(MIX, self.weights)[0]
        text = f"cached question {rng.randrange(50)}" if cached else f"question {rng.random()}"
        body: dict = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
        key = self.stack.keys[rng.choice(["acme", "globex"])].key
        if api == "anthropic":
            body["max_tokens"] = 64
            path, headers = "/v1/messages", {"x-api-key": key}
        else:
            path, headers = "/v1/chat/completions", {"authorization": f"Bearer {key}"}
        kind = f"{api}:{model}:{'sse' if stream else 'json'}{':abort' if abort else ''}"
        self.kinds[kind] += 1
        t = time.monotonic()
        try:
            async with client.post(path, json=body, headers=headers) as r:
                if r.status != 200:
                    self.errors[f"{kind} {r.status}"] += 1
                    await r.read()
                    return
                if abort:
                    await r.content.readline()
                    self.aborted += 1
                    return  # leaving the block closes the connection mid-stream
                data = await r.read()
                if stream and (b"event: error" in data or b'data: {"error"' in data):
                    self.errors[f"{kind} stream-error"] += 1
                    return
        except (TimeoutError, aiohttp.ClientError) as e:
            self.errors[f"{kind} {type(e).__name__}"] += 1
            return
        self.ok += 1
        self.latencies.append(time.monotonic() - t)

    async def worker(self, client: aiohttp.ClientSession, seed: int, until: float) -> None:
        rng = random.Random(seed)
        await asyncio.sleep(rng.random() * self.interval)
        while time.monotonic() < until:
            start = time.monotonic()
            await self.one(client, rng)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - start)))

    async def run(self, seconds: float, report_every: float, procs: dict[str, int]) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(self.stack.base_url, timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=self.workers)) as client:  # fmt: skip
            until = time.monotonic() + seconds
            tasks = [asyncio.create_task(self.worker(client, i, until)) for i in range(self.workers)]
            t0 = time.monotonic()
            while not all(t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=report_every)
                if not all(t.done() for t in tasks):
                    elapsed = (time.monotonic() - t0) / 60
                    print(f"[{elapsed:5.1f} min] ok={self.ok} errors={sum(self.errors.values())}  {rss_line(procs)}",
                          flush=True)  # fmt: skip
            for t in tasks:
                t.result()


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rps", type=float, default=40.0, help="target request rate (all workers)")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--report-every", type=float, default=60.0, help="seconds between progress lines")
    args = ap.parse_args()

    fo = FakeProviderThread(port=0, chunks=6).start()
    fa = FakeProviderThread(port=0, chunks=6).start()
    stack = Stack(Path(tempfile.mkdtemp(prefix="sidegate-soak-")), fo.url, fa.url, extra=EXTRA)
    os.environ.setdefault("SIDEGATE_LOG_LEVEL", "WARNING")
    try:
        stack.start()
        procs = processes(stack)
        soak = Soak(stack, args.rps, args.workers)
        asyncio.run(soak.run(10.0, 60.0, procs))  # warm-up: caches, pools, lazy imports
        start_rss = {n: rss_kib(p) for n, p in procs.items()}
        print(f"start (after 10 s warm-up): {rss_line(procs)}", flush=True)
        soak = Soak(stack, args.rps, args.workers)
        t = time.monotonic()
        asyncio.run(soak.run(args.minutes * 60, args.report_every, procs))
        took = time.monotonic() - t
        end_rss = {n: rss_kib(p) for n, p in procs.items()}
        print(f"end:   {rss_line(procs)}")
        total = soak.ok + soak.aborted + sum(soak.errors.values())
        print(f"\n{total} requests in {took / 60:.1f} min ({total / took:.1f}/s); ok={soak.ok} "
              f"aborted by the client on purpose={soak.aborted} errors={sum(soak.errors.values())}")  # fmt: skip
        for k, n in soak.errors.most_common():
            print(f"  error {k}: {n}")
        print(f"latency (ok) p50={pct(soak.latencies, 0.5) * 1000:.1f} ms  p99={pct(soak.latencies, 0.99) * 1000:.1f} ms")
        print("RSS growth: " + "  ".join(f"{n}={(end_rss[n] - start_rss[n]) / 1024:+.1f}MiB" for n in procs))
        restarts = {c.name: c.restarts for c in stack.sup.children if c.restarts} if stack.sup else {}
        if restarts or any(c.proc is not None and c.proc.poll() is not None for c in stack.sup.children):
            print(f"processes exited or restarted: {restarts}")
            return 1
        return 1 if soak.errors else 0
    finally:
        stack.stop()
        fo.stop()
        fa.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Soak: moderate mixed load on a whole local stack for N minutes; watch memory and errors.

    python bench/soak.py [--minutes 10] [--rps 40] [--workers 16] [--front ext_proc|http|both]

Starts Valkey + authz + extproc + Envoy (tests/harness.py) and two fake providers, then sends a
paced mix of requests (OpenAI and Anthropic clients, same-API and translated routes, streaming and
not, exact-cache hits, a few client aborts mid-stream). `--front both` runs two stacks side by side,
one per front (the gRPC ext_proc front with ext_authz, the HTTP front with inline auth), each at
half the rate. A third tenant, `capped` (`rpm: --capped-rpm`), asks for more than its limit: the
soak counts its admitted requests in every sliding window and reports over-admission (must be 0).
Prints the RSS of every process at the start (after a warm-up) and once a minute, then the totals:
requests, errors by kind, latency p50/p99, over-admission and RSS growth per process. Exit code 1
when any request failed or the capped tenant was over-admitted.
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
HTTP_FRONT = {"services": {"auth": "inline", "front": "http"}}
WINDOW_S = 60.0
"""The quota window: every admitted request counts in it for at least this long (docs/quota.md)."""
SLACK_S = 2.0
"""Admission happens between a request's send and its answer: windows are checked this much shorter."""
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


class SoakStack(Stack):
    """The harness's stack plus the `capped` tenant (rpm limit) whose admissions the soak counts."""

    def __init__(self, *args: object, capped_rpm: int, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.capped_rpm = capped_rpm

    def config(self) -> dict:
        data = super().config()
        data["tenants"]["capped"] = {"keys": [self._key("capped", "capped")],
                                     "quota": {"limits": {"rpm": self.capped_rpm}}}  # fmt: skip
        return data


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def processes(stacks: dict[str, Stack]) -> dict[str, int]:
    out = {}
    for front, stack in stacks.items():
        assert stack.sup is not None
        prefix = f"{front}:" if len(stacks) > 1 else ""
        out.update({prefix + c.name: c.proc.pid for c in stack.sup.children if c.proc is not None})
    out["soak+fakes"] = os.getpid()
    return out


def rss_line(procs: dict[str, int]) -> str:
    return "  ".join(f"{n}={rss_kib(p) / 1024:.1f}MiB" for n, p in procs.items())


def most_in_window(times: list[float], width: float) -> int:
    """The largest number of `times` within any interval of `width` seconds."""
    s, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(s):
        while t - s[lo] > width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class Soak:
    def __init__(self, stack: Stack, rps: float, workers: int, capped_rps: float = 0.0):
        self.stack = stack
        self.interval = workers / rps
        self.workers = workers
        self.capped_interval = 1 / capped_rps if capped_rps > 0 else 0.0
        self.latencies: list[float] = []
        self.ok = 0
        self.aborted = 0
        self.errors: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.weights = [m[0] for m in MIX]
        self.capped_admitted: list[float] = []
        self.capped_refused = 0

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

    async def capped_one(self, client: aiohttp.ClientSession) -> None:
        """One request of the capped tenant: 200 (admitted, its send time kept) or 429 (refused)."""
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"capped {random.random()}"}]}
        headers = {"authorization": f"Bearer {self.stack.keys['capped'].key}"}
        t = time.monotonic()
        try:
            async with client.post("/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                if r.status == 200:
                    self.capped_admitted.append(t)
                elif r.status == 429:
                    self.capped_refused += 1
                else:
                    self.errors[f"capped {r.status}"] += 1
        except (TimeoutError, aiohttp.ClientError) as e:
            self.errors[f"capped {type(e).__name__}"] += 1

    async def worker(self, client: aiohttp.ClientSession, seed: int, until: float) -> None:
        rng = random.Random(seed)
        await asyncio.sleep(rng.random() * self.interval)
        while time.monotonic() < until:
            start = time.monotonic()
            await self.one(client, rng)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - start)))

    async def capped_worker(self, client: aiohttp.ClientSession, until: float) -> None:
        while time.monotonic() < until:
            start = time.monotonic()
            await self.capped_one(client)
            await asyncio.sleep(max(0.0, self.capped_interval - (time.monotonic() - start)))

    async def run(self, seconds: float) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(self.stack.base_url, timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=self.workers + 1)) as client:  # fmt: skip
            until = time.monotonic() + seconds
            tasks = [asyncio.create_task(self.worker(client, i, until)) for i in range(self.workers)]
            if self.capped_interval:
                tasks.append(asyncio.create_task(self.capped_worker(client, until)))
            await asyncio.gather(*tasks)

    def over_admitted(self, rpm: int) -> int:
        """Admissions of the capped tenant beyond its limit in the worst window (0: never over)."""
        return max(0, most_in_window(self.capped_admitted, WINDOW_S - SLACK_S) - rpm)


async def run_all(soaks: dict[str, Soak], seconds: float, report_every: float, procs: dict[str, int]) -> None:
    tasks = [asyncio.create_task(s.run(seconds)) for s in soaks.values()]
    t0 = time.monotonic()
    while not all(t.done() for t in tasks):
        await asyncio.wait(tasks, timeout=report_every)
        if not all(t.done() for t in tasks):
            elapsed = (time.monotonic() - t0) / 60
            ok = sum(s.ok for s in soaks.values())
            errors = sum(sum(s.errors.values()) for s in soaks.values())
            print(f"[{elapsed:5.1f} min] ok={ok} errors={errors}  {rss_line(procs)}", flush=True)
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
    ap.add_argument("--rps", type=float, default=40.0, help="target request rate (all workers, all stacks)")
    ap.add_argument("--workers", type=int, default=16, help="concurrent clients per stack")
    ap.add_argument("--front", choices=("ext_proc", "http", "both"), default="ext_proc")
    ap.add_argument("--capped-rpm", type=int, default=120, help="the capped tenant's limit (requests a minute)")
    ap.add_argument("--capped-rps", type=float, default=3.0, help="what the capped tenant asks for, per stack")
    ap.add_argument("--report-every", type=float, default=60.0, help="seconds between progress lines")
    args = ap.parse_args()

    fronts = ["ext_proc", "http"] if args.front == "both" else [args.front]
    fo = FakeProviderThread(port=0, chunks=6).start()
    fa = FakeProviderThread(port=0, chunks=6).start()
    os.environ.setdefault("SIDEGATE_LOG_LEVEL", "WARNING")
    stacks: dict[str, Stack] = {}
    try:
        for front in fronts:
            extra = {**EXTRA, **(HTTP_FRONT if front == "http" else {})}
            workdir = Path(tempfile.mkdtemp(prefix=f"sidegate-soak-{front}-"))
            stacks[front] = SoakStack(workdir, fo.url, fa.url, extra=extra, capped_rpm=args.capped_rpm).start()
        procs = processes(stacks)
        rps = args.rps / len(stacks)
        warm = {f: Soak(s, rps, args.workers) for f, s in stacks.items()}
        asyncio.run(run_all(warm, 10.0, 60.0, procs))  # warm-up: caches, pools, lazy imports
        start_rss = {n: rss_kib(p) for n, p in procs.items()}
        print(f"start (after 10 s warm-up): {rss_line(procs)}", flush=True)
        soaks = {f: Soak(s, rps, args.workers, args.capped_rps) for f, s in stacks.items()}
        t = time.monotonic()
        asyncio.run(run_all(soaks, args.minutes * 60, args.report_every, procs))
        took = time.monotonic() - t
        end_rss = {n: rss_kib(p) for n, p in procs.items()}
        print(f"end:   {rss_line(procs)}")
        failed = False
        for front, soak in soaks.items():
            total = soak.ok + soak.aborted + sum(soak.errors.values())
            capped = len(soak.capped_admitted) + soak.capped_refused
            over = soak.over_admitted(args.capped_rpm)
            print(f"\n[{front}] {total + capped} requests in {took / 60:.1f} min ({(total + capped) / took:.1f}/s); "
                  f"ok={soak.ok} aborted by the client on purpose={soak.aborted} errors={sum(soak.errors.values())}")  # fmt: skip
            for k, n in soak.errors.most_common():
                print(f"  error {k}: {n}")
            print(f"  capped tenant (rpm {args.capped_rpm}): {capped} asked, {len(soak.capped_admitted)} admitted, "
                  f"{soak.capped_refused} refused (429), most in any {WINDOW_S - SLACK_S:.0f} s: "
                  f"{most_in_window(soak.capped_admitted, WINDOW_S - SLACK_S)}, over-admission: {over}")  # fmt: skip
            print(f"  latency (ok) p50={pct(soak.latencies, 0.5) * 1000:.1f} ms  p99={pct(soak.latencies, 0.99) * 1000:.1f} ms")
            failed = failed or bool(soak.errors) or over > 0
        print("RSS growth: " + "  ".join(f"{n}={(end_rss[n] - start_rss[n]) / 1024:+.1f}MiB "
                                         f"({(end_rss[n] - start_rss[n]) / max(1, start_rss[n]) * 100:+.1f} %)" for n in procs))  # fmt: skip
        for front, stack in stacks.items():
            assert stack.sup is not None
            restarts = {c.name: c.state.total for c in stack.sup.children if c.state.total}
            if restarts or any(c.proc is not None and c.proc.poll() is not None for c in stack.sup.children):
                print(f"[{front}] processes exited or restarted: {restarts}")
                failed = True
        return 1 if failed else 0
    finally:
        for stack in stacks.values():
            stack.stop()
        fo.stop()
        fa.stop()


if __name__ == "__main__":
    sys.exit(main())

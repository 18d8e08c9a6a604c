"""Cost of the console's usage views at their bound: a ledger of N records in a real Valkey (embedded,
on a free port), then the series, top and tail computations over it, exactly as the endpoints run
them (newest first, at most ``MAX_RECORDS`` read).

Run: PYTHONPATH=$PWD python bench/console_usage_bench.py [--records N] [--rounds R]
Prints the median wall time of R rounds per view, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import time

from sidegate.admin import usage
from sidegate.admin.principal import Principal, Role
from sidegate.features.ledger.ledger import STREAM, LedgerRecord
from sidegate.ports import free_port, wait_for_port
from sidegate.store.redispy import client
from sidegate.store.valkey import embedded_valkey_cmd


async def _seed(url: str, n: int, span_s: float) -> None:
    r = client(url, 30.0)
    now = time.time()
    rnd = random.Random(1)
    try:
        await r.delete(STREAM)
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            ts = now - span_s + span_s * i / n
            rec = LedgerRecord(
                ts=ts, tenant=f"t{rnd.randrange(20)}", team=f"team{rnd.randrange(5)}", user=f"u{rnd.randrange(50)}",
                model=rnd.choice(["gpt-4o-mini", "gpt-4o", "claude-haiku"]), provider="openai",
                status=rnd.choice([200] * 19 + [429]), input_tokens=rnd.randrange(1000),
                output_tokens=rnd.randrange(500), cost_usd=rnd.random() / 100, latency_ms=rnd.random() * 900,
            )  # fmt: skip
            pipe.xadd(STREAM, rec.to_fields(), id=f"{int(ts * 1000)}-{i}")
            if i % 5000 == 4999:
                await pipe.execute()
        await pipe.execute()
    finally:
        await r.aclose()


async def _measure(url: str, rounds: int) -> dict[str, float]:
    r = client(url, 30.0)
    who = Principal("env", Role.OWNER)
    times: dict[str, list[float]] = {"series 24h/hour by model": [], "top 24h by model": [], "tail 50": []}
    try:
        for _ in range(rounds):
            now = time.time()
            t = time.perf_counter()
            window = usage.Window.of(now - 86400, now, 3600)
            recs, _ = await usage.scan(r, who, None, window)
            s = usage.Series(window, "model")
            s.add_all(recs)
            s.to_dict()
            times["series 24h/hour by model"].append(time.perf_counter() - t)
            t = time.perf_counter()
            recs, _ = await usage.scan(r, who, None, usage.Window.of(now - 86400, now, 60, 10**6))
            usage.top(recs, "model", 10)
            times["top 24h by model"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await usage.recent(r, who, None, None, 50)
            times["tail 50"].append(time.perf_counter() - t)
    finally:
        await r.aclose()
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=usage.MAX_RECORDS)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen(embedded_valkey_cmd(port), stdout=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        url = f"redis://127.0.0.1:{port}"
        asyncio.run(_seed(url, args.records, 86000))
        for name, ms in asyncio.run(_measure(url, args.rounds)).items():
            print(f"{name:28s} {ms:8.1f} ms  ({args.records} records in the range)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()

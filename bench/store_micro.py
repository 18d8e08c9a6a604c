"""Micro-benchmark of the store client's per-command cost: CPU time (this process) per GET, the
commands issued 100 at a time (auto-pipelined, as concurrent requests issue them).

    PYTHONPATH=$PWD python bench/store_micro.py URL [URL...]

A `redis://` URL measures the lean single-server client; a `redis+cluster://` URL the cluster one
(sidegate/store/cluster.py). Prints µs of CPU per command (median of 5 rounds of 20,000 commands).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from sidegate.store import open_store

BATCH, N, ROUNDS = 100, 20_000, 5


async def measure(url: str) -> float:
    store = open_store(url)
    keys = [f"bench:{i}" for i in range(BATCH)]
    for k in keys:
        await store.command("SET", k, "x" * 64, timeout_s=2.0)
    rounds = []
    for _ in range(ROUNDS):
        t0 = time.process_time()
        for _ in range(N // BATCH):
            await asyncio.gather(*(store.command("GET", k, timeout_s=1.0) for k in keys))
        rounds.append((time.process_time() - t0) / N * 1e6)
    await store.aclose()
    return statistics.median(rounds)


def main() -> None:
    for url in sys.argv[1:]:
        kind = type(open_store(url)).__name__
        print(
            f"{kind:13s} {asyncio.run(measure(url)):6.1f} µs CPU/command  ({url.split('://')[0]})", flush=True
        )


if __name__ == "__main__":
    main()

"""Cost of ``Ledger.submit`` on the response path: a put on the in-memory queue (queue not full),
and the full-queue path (before the spill: a drop; with it: the overflow list the writer spills).

Run: PYTHONPATH=$PWD python bench/ledger_submit_bench.py [--iterations N]
Numbers are the median of bounded rounds, in microseconds per call. The store is never called (the
writer is not started), so only the response path's own cost is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import tempfile
import time
from typing import Any

from sidegate.features.ledger import ledger as ledger_mod
from sidegate.features.ledger.ledger import Ledger, LedgerRecord


def _round(led: Ledger, rec: LedgerRecord, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        led.submit(rec)
    return (time.perf_counter() - t) / n * 1e6


def _fresh(queue_size: int, **kw: Any) -> Ledger:
    return Ledger(None, queue_size=queue_size, **kw)  # type: ignore[arg-type]


async def main(iterations: int) -> dict[str, float]:
    rec = LedgerRecord(ts=time.time(), request_id="req-1", tenant="acme", model="gpt-4o-mini", status=200)
    rounds = 7
    out: dict[str, float] = {}
    # queue not full: a queue big enough for every round
    out["queue"] = statistics.median(_round(_fresh(iterations + 1), rec, iterations) for _ in range(rounds))
    # queue full: before the spill every call is a counted drop; with it, an append to the overflow
    kw: dict[str, Any] = {}
    if "spill" in inspect.signature(Ledger.__init__).parameters:
        from sidegate.features.ledger.spill import Spill

        kw = {"spill": Spill(tempfile.mkdtemp(prefix="sg-bench-spill-"), 1 << 20), "overflow": iterations + 1}
    out["full"] = statistics.median(_round(_fresh(1, **kw), rec, iterations) for _ in range(rounds))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=200_000)
    args = ap.parse_args()
    res = asyncio.run(main(min(args.iterations, 2_000_000)))
    print(
        f"{ledger_mod.__file__}: submit, queue not full {res['queue']:.3f} µs; queue full {res['full']:.3f} µs"
    )

"""Throughput of the ledger writer into a real valkey-server (records/s, median of 5 runs of 50 000
queued records), and the longest PING another caller of the same store client waited meanwhile.

Run: PYTHONPATH=$PWD python bench/ledger_write_bench.py
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import time

from sidegate.features.ledger import ledger as ledger_mod
from sidegate.features.ledger.ledger import Ledger, LedgerRecord
from sidegate.ports import free_port, wait_for_port
from sidegate.store import Store, open_store
from sidegate.store.valkey import valkey_binary

N = 50_000


def _filled(store: Store) -> Ledger:
    led = Ledger(store, queue_size=N + 1)
    rec = LedgerRecord(ts=time.time(), request_id="req-1", tenant="acme", model="gpt-4o-mini", status=200)
    for _ in range(N):
        led.submit(rec)
    return led


async def main(url: str) -> tuple[float, float]:
    store = open_store(url)
    rates = []
    for _ in range(5):
        led = _filled(store)
        t = time.perf_counter()
        led.start()
        await led.stop(60)
        rates.append(N / (time.perf_counter() - t))
    led, worst, done = _filled(store), 0.0, asyncio.Event()

    async def probe() -> None:
        nonlocal worst
        while not done.is_set():
            t = time.perf_counter()
            await store.command("PING")
            worst = max(worst, time.perf_counter() - t)

    task = asyncio.create_task(probe())
    led.start()
    await led.stop(60)
    done.set()
    await task
    await store.aclose()
    return statistics.median(rates), worst * 1000


if __name__ == "__main__":
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cmd = [valkey_binary(), "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", port, 10, proc)
            rate, worst = asyncio.run(main(f"redis://127.0.0.1:{port}/0"))
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"{ledger_mod.__file__}: {rate:.0f} records/s; longest PING meanwhile {worst:.1f} ms")

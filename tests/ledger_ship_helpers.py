"""Shared pieces of the ledger shipper tests (the Valkey is valkey_helpers'): deterministic records, one shipper
run against chDB, and the exactly-once check (rows, distinct ids, the spend view against the ledger)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import valkey_helpers
from redis.asyncio import Redis

from sidegate.config.ledger_ship import LedgerShipConfig
from sidegate.features.ledger.clickhouse import ChdbSink
from sidegate.features.ledger.ledger import STREAM, LedgerRecord, as_text
from sidegate.features.ledger.ship import Shipper

T = TypeVar("T")
TENANTS = ("acme", "globex", "initech")
MODELS = ("gpt-4o-mini", "claude-haiku")
MINIMAL = ("providers:\n  openai: {api: openai, base_url: 'http://127.0.0.1:9'}\n"
           "models:\n  gpt-4o-mini: {routes: [{provider: openai}]}\n")  # fmt: skip


def run(url: str, fn: Callable[[Redis], Awaitable[T]]) -> T:
    # A roomier socket timeout than the other store tests': chDB shares this process (and its CPU).
    return valkey_helpers.run(url, fn, socket_timeout_s=10.0)


def record(i: int) -> LedgerRecord:
    """A deterministic record: tenants, models, costs and a missing TTFT vary with ``i``."""
    return LedgerRecord(
        ts=1_765_000_000.0 + i * 37.5, request_id=f"req-{i}", tenant=TENANTS[i % 3], model=MODELS[i % 2],
        provider="openai", status=500 if i % 11 == 0 else 200, input_tokens=10 + i, output_tokens=i % 7,
        cost_usd=round(0.001 * (i % 13), 6), latency_ms=12.5, ttft_ms=None if i % 2 else 3.25, stream=bool(i % 2),
    )  # fmt: skip


async def add_records(redis: Redis, n: int, start: int = 0) -> list[str]:
    pipe = redis.pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.xadd(STREAM, record(i).to_fields())  # type: ignore[arg-type]
    return [as_text(x) for x in await pipe.execute()]


def ship_cfg(path: Path, **kw: Any) -> LedgerShipConfig:
    opts: dict[str, Any] = {"url": f"chdb://{path}", "batch_size": 40, "flush_interval_s": 0.05,
                            "retry_initial_s": 0.05, "retry_max_s": 0.2, "consumer": "test-shipper",
                            "create_tables": True} | kw  # fmt: skip
    return LedgerShipConfig(**opts)


async def ship_all(redis: Redis, cfg: LedgerShipConfig, sink: Any = None) -> Shipper:
    """One shipper run until caught up (the sink closed after it)."""
    sink = sink or ChdbSink(cfg.url.removeprefix("chdb://"), cfg.database, cfg.table)  # type: ignore[union-attr]
    shipper = Shipper(redis, sink, cfg)
    stop = asyncio.Event()
    try:
        assert await shipper.connect(stop, cfg.create_tables)
        await shipper.run(stop, follow=False)
    finally:
        await sink.close()
    return shipper


async def clickhouse(path: Path, *queries: str) -> list[list[dict[str, Any]]]:
    sink = ChdbSink(str(path), "sidegate", "ledger")
    await sink.open()
    try:
        return [await sink.query(q) for q in queries]
    finally:
        await sink.close()


COUNTS = "SELECT count() AS n, count(DISTINCT id) AS ids, sum(cost_usd) AS cost, sum(input_tokens) AS inp FROM sidegate.ledger"
VIEW = ("SELECT tenant, model, day, sum(requests) AS requests, sum(errors) AS errors, sum(input_tokens) AS inp, "
        "round(sum(cost_usd), 6) AS cost FROM sidegate.ledger_daily GROUP BY tenant, model, day ORDER BY tenant, model, day")  # fmt: skip
FROM_LEDGER = ("SELECT tenant, model, toDate(ts) AS day, count() AS requests, countIf(status >= 400 OR aborted) AS errors, "
               "sum(input_tokens) AS inp, round(sum(cost_usd), 6) AS cost FROM sidegate.ledger "
               "GROUP BY tenant, model, day ORDER BY tenant, model, day")  # fmt: skip


def assert_exactly_once(path: Path, n: int) -> None:
    counts, view, ledger_rows = asyncio.run(clickhouse(path, COUNTS, VIEW, FROM_LEDGER))
    want_cost = sum(record(i).cost_usd for i in range(n))
    assert counts[0]["n"] == n and counts[0]["ids"] == n, counts
    assert abs(counts[0]["cost"] - want_cost) < 1e-6 and counts[0]["inp"] == sum(10 + i for i in range(n))
    assert view == ledger_rows and len(view) > 3  # the spend view sums exactly what the ledger holds

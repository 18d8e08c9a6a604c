"""The shipper killed (SIGKILL) at the worst moment, after ClickHouse took a batch and before the
store's XACK, three times in a row, then run to the end: every ledger record is in ClickHouse
exactly once and the spend view's sums match the ledger (real valkey-server, real chDB; the
shipper is `sidegate ledger ship` in a subprocess; chDB is read only after it exited)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger_ship_helpers import MINIMAL, add_records, assert_exactly_once, clickhouse, run
from redis.asyncio import Redis
from valkey_helpers import valkey

from sidegate.features.ledger.ledger import STREAM
from sidegate.features.ledger.ship import CRASH_ENV

N = 1000
BATCH = 100


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    with valkey() as url:
        yield url


def ship(cfg_path: Path, url: str, crash: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash:
        env[CRASH_ENV] = crash
    cmd = [sys.executable, "-m", "sidegate.cli", "ledger", "ship", "-c", str(cfg_path), "--redis-url", url]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def pending(url: str) -> int:
    async def body(redis: Redis) -> int:
        return int((await redis.xpending(STREAM, "clickhouse"))["pending"])

    async def main() -> int:
        from sidegate.store.redispy import client

        redis = client(url, socket_timeout_s=5.0)
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def test_sigkill_between_insert_and_ack_neither_loses_nor_doubles(valkey_url: str, tmp_path: Path) -> None:
    ch = tmp_path / "ch"
    cfg_path = tmp_path / "sidegate.yaml"
    cfg_path.write_text(
        MINIMAL + f"observability:\n  ledger_ship:\n    url: chdb://{ch}\n    batch_size: {BATCH}\n"
        "    flush_interval_s: 0.05\n    consumer: crash-test\n    create_tables: true\n"
    )

    async def fill(redis: Redis) -> None:
        await add_records(redis, N)

    run(valkey_url, fill)
    stored: list[int] = []
    for _ in range(3):  # each run re-sends the batch its predecessor left pending, then dies after the next
        proc = ship(cfg_path, valkey_url, "after_insert:2")
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert "SIGKILL after insert 2" in proc.stderr
        assert pending(valkey_url) == BATCH  # inserted, never acknowledged
        stored.append(asyncio.run(clickhouse(ch, "SELECT count() AS n FROM sidegate.ledger"))[0][0]["n"])
    assert stored == [2 * BATCH, 3 * BATCH, 4 * BATCH]  # ClickHouse already holds the unacknowledged batch
    proc = ship(cfg_path, valkey_url, None)
    assert proc.returncode == 0, proc.stderr
    assert f"shipped {N - 3 * BATCH} records" in proc.stderr  # the pending batch again + the rest
    assert pending(valkey_url) == 0
    assert_exactly_once(ch, N)

"""A re-sent batch some of whose entries the stream trimmed (MAXLEN) after its first insert landed:
the rest still carries the first insert's token, so ClickHouse drops it instead of storing it twice
(real valkey-server, chDB). Both ways a batch is re-sent: the shipper's own pending list after a
restart, and an idle consumer's batch taken over."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger_ship_helpers import add_records, clickhouse, run, ship_all, ship_cfg
from redis.asyncio import Redis
from valkey_helpers import valkey

from sidegate.features.ledger.clickhouse import ChdbSink, dedup_token, rows_jsonl
from sidegate.features.ledger.ledger import STREAM, LedgerRecord, as_text


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    with valkey() as url:
        yield url


async def _read_insert_trim(redis: Redis, path: Path, group: str, consumer: str) -> None:
    """`consumer` reads 4 of 10 records, inserts them and dies before its XACK; then 2 of those 4
    are trimmed from the stream."""
    ids = await add_records(redis, 10)
    await redis.xgroup_create(STREAM, group, id="0")
    resp = await redis.xreadgroup(group, consumer, {STREAM: ">"}, count=4)
    batch = [(as_text(e), LedgerRecord.from_fields(d)) for e, d in resp[0][1]]
    sink = ChdbSink(str(path), "sidegate", "ledger")
    await sink.open()
    await sink.create_tables()
    await sink.insert(rows_jsonl(batch), dedup_token([e for e, _ in batch]))
    await sink.close()
    await redis.xdel(STREAM, *ids[:2])


def _stored(path: Path) -> tuple[int, int]:
    rows = asyncio.run(
        clickhouse(path, "SELECT count() AS n, count(DISTINCT id) AS ids FROM sidegate.ledger")
    )
    return rows[0][0]["n"], rows[0][0]["ids"]


@pytest.mark.parametrize("who", ["own", "idle"])
def test_partly_trimmed_resent_batch_is_not_stored_twice(valkey_url: str, tmp_path: Path, who: str) -> None:
    cfg = ship_cfg(tmp_path / "ch", claim_idle_s=0.2)
    consumer = cfg.consumer if who == "own" else "old-host"

    async def body(redis: Redis) -> tuple[int, int, int]:
        await _read_insert_trim(redis, tmp_path / "ch", cfg.group, consumer)
        await asyncio.sleep(0.3)  # (idle: past claim_idle_s)
        shipper = await ship_all(redis, cfg)
        return shipper.shipped, shipper.trimmed, (await redis.xpending(STREAM, cfg.group))["pending"]

    shipped, trimmed, pending = run(valkey_url, body)
    assert (shipped, trimmed, pending) == (8, 2, 0)
    assert _stored(tmp_path / "ch") == (10, 10)  # the 2 survivors of the first batch once, not twice


def test_crash_again_after_the_resend_keeps_the_token(valkey_url: str, tmp_path: Path) -> None:
    """The trimmed ids stay pending until the batch is acknowledged: a second crash (after the
    re-send's insert, before its XACK) re-sends the same batch under the same token again."""
    cfg = ship_cfg(tmp_path / "ch")

    class DiesAfterInsert(ChdbSink):
        async def insert(self, body: bytes, token: str) -> None:
            await super().insert(body, token)
            raise _Died

    async def body(redis: Redis) -> int:
        await _read_insert_trim(redis, tmp_path / "ch", cfg.group, cfg.consumer)
        with pytest.raises(_Died):
            await ship_all(redis, cfg, DiesAfterInsert(str(tmp_path / "ch"), "sidegate", "ledger"))
        pending = (await redis.xpending(STREAM, cfg.group))["pending"]
        await ship_all(redis, cfg)
        return pending

    assert run(valkey_url, body) == 4  # the whole first batch, trimmed ids included
    assert _stored(tmp_path / "ch") == (10, 10)


class _Died(BaseException):
    """The process 'dies' right after its insert."""

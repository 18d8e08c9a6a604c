"""The ledger shipper against a real valkey-server and real ClickHouse (chDB 26.9 in this process):
every record once, a re-send after a crash between insert and XACK deduplicated, an idle consumer's
batch taken over, failed inserts retried with back-off, trimmed entries counted, the lag metric,
and a stop while ClickHouse is down leaving the batch pending (never acknowledged unshipped)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ledger_ship_helpers import (
    MINIMAL,
    add_records,
    assert_exactly_once,
    clickhouse,
    run,
    ship_all,
    ship_cfg,
)
from redis.asyncio import Redis
from valkey_helpers import valkey

from sidegate import config as config_mod
from sidegate import metrics as m
from sidegate.features.ledger import service
from sidegate.features.ledger.clickhouse import ChdbSink, dedup_token, rows_jsonl
from sidegate.features.ledger.ledger import STREAM, LedgerRecord, as_text
from sidegate.features.ledger.ship import Shipper
from sidegate.ports import free_port, wait_for_port
from sidegate.store.redispy import client
from sidegate.store.valkey import valkey_binary


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    with valkey() as url:
        yield url


def test_every_record_once_with_the_view(valkey_url: str, tmp_path: Path) -> None:
    cfg = ship_cfg(tmp_path / "ch")

    async def body(redis: Redis) -> tuple[int, int, int | None]:
        await add_records(redis, 205)
        first = await ship_all(redis, cfg)
        await add_records(redis, 20, start=205)
        second = await ship_all(redis, cfg)  # resumes where the group is
        lag = await Shipper(redis, ChdbSink("x", "d", "t"), cfg).update_lag()
        return first.shipped + second.shipped, first.batches, lag

    shipped, batches, lag = run(valkey_url, body)
    assert (shipped, batches, lag) == (225, 6, 0)  # 205 in batches of <= 40
    assert_exactly_once(tmp_path / "ch", 225)
    rows = asyncio.run(
        clickhouse(tmp_path / "ch", "SELECT * FROM sidegate.ledger WHERE request_id = 'req-3'")
    )[0]
    assert (
        rows[0]["ts"] == "2025-12-06 05:48:32.500"
        and rows[0]["ttft_ms"] is None
        and rows[0]["stream"] is True
    )


class _Died(BaseException):
    """The process 'dies' right after its insert (nothing catches a BaseException)."""


class DiesAfterInsert(ChdbSink):
    async def insert(self, body: bytes, token: str) -> None:
        await super().insert(body, token)
        raise _Died


def test_resent_batch_after_insert_before_ack_is_deduplicated(valkey_url: str, tmp_path: Path) -> None:
    cfg = ship_cfg(tmp_path / "ch", batch_size=50)

    async def body(redis: Redis) -> tuple[int, int]:
        await add_records(redis, 120)
        with pytest.raises(_Died):
            await ship_all(redis, cfg, DiesAfterInsert(str(tmp_path / "ch"), "sidegate", "ledger"))
        pending = (await redis.xpending(STREAM, cfg.group))["pending"]
        # Restarted with a SMALLER batch size: the pending batch is still re-sent whole (same token).
        again = await ship_all(redis, cfg.model_copy(update={"batch_size": 7}))
        return pending, again.shipped

    pending, shipped = run(valkey_url, body)
    assert pending == 50 and shipped == 120  # the 50 counted as shipped again, stored once
    assert_exactly_once(tmp_path / "ch", 120)


def test_idle_consumers_batch_is_taken_over_whole(valkey_url: str, tmp_path: Path) -> None:
    cfg = ship_cfg(tmp_path / "ch", claim_idle_s=0.2)

    async def body(redis: Redis) -> tuple[int, list[str]]:
        await add_records(redis, 90)
        await redis.xgroup_create(STREAM, cfg.group, id="0")
        # Two other hosts' shippers each read a batch, inserted it and died before their XACK.
        sink = ChdbSink(str(tmp_path / "ch"), "sidegate", "ledger")
        await sink.open()
        await sink.create_tables()
        for host, count in (("old-host-a", 30), ("old-host-b", 25)):
            resp = await redis.xreadgroup(cfg.group, host, {STREAM: ">"}, count=count)
            batch = [(as_text(e), LedgerRecord.from_fields(d)) for e, d in resp[0][1]]
            await sink.insert(rows_jsonl(batch), dedup_token([e for e, _ in batch]))
        await sink.close()
        await asyncio.sleep(0.3)
        shipper = await ship_all(redis, cfg)
        names = [as_text(c["name"]) for c in await redis.xinfo_consumers(STREAM, cfg.group)]
        return shipper.shipped, names

    shipped, consumers = run(valkey_url, body)
    assert shipped == 90
    assert_exactly_once(tmp_path / "ch", 90)
    assert consumers == ["test-shipper"]  # the dead one removed once idle with nothing pending


class FlakySink(ChdbSink):
    def __init__(self, *a: Any, fail: int) -> None:
        super().__init__(*a)
        self.fail, self.calls = fail, []

    async def insert(self, body: bytes, token: str) -> None:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.fail:
            raise ConnectionError("clickhouse is down")
        await super().insert(body, token)


def test_failed_inserts_are_retried_with_back_off(valkey_url: str, tmp_path: Path) -> None:
    cfg = ship_cfg(tmp_path / "ch", retry_initial_s=0.1, retry_max_s=0.3)
    sink = FlakySink(str(tmp_path / "ch"), "sidegate", "ledger", fail=4)
    before = m.LEDGER_SHIP_FAILURES.labels("insert")._value.get()

    async def body(redis: Redis) -> Shipper:
        await add_records(redis, 30)
        return await ship_all(redis, cfg, sink)

    shipper = run(valkey_url, body)
    gaps = [b - a for a, b in zip(sink.calls, sink.calls[1:], strict=False)]
    assert shipper.shipped == 30 and shipper.failures == 4 and len(sink.calls) == 5
    assert [round(g, 1) for g in gaps] == [0.1, 0.2, 0.3, 0.3], gaps  # doubling, capped: no busy loop
    assert m.LEDGER_SHIP_FAILURES.labels("insert")._value.get() - before == 4
    assert_exactly_once(tmp_path / "ch", 30)


@pytest.mark.alone  # bounds a duration
def test_stop_while_clickhouse_is_down_acknowledges_nothing(valkey_url: str, tmp_path: Path) -> None:
    cfg = ship_cfg(tmp_path / "ch")
    sink = FlakySink(str(tmp_path / "ch"), "sidegate", "ledger", fail=10**6)

    async def body(redis: Redis) -> tuple[float, int, int | None]:
        await add_records(redis, 25)
        shipper = Shipper(redis, sink, cfg)
        stop = asyncio.Event()
        assert await shipper.connect(stop, True)
        task = asyncio.create_task(shipper.run(stop))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 5)
        await sink.close()
        return (
            time.monotonic() - t0,
            (await redis.xpending(STREAM, cfg.group))["pending"],
            await shipper.update_lag(),
        )

    took, pending, lag = run(valkey_url, body)
    assert took < 0.5 and pending == 25 and lag == 25
    assert m.LEDGER_SHIP_LAG._value.get() == 25


def test_trimmed_pending_entries_are_counted_not_shipped(valkey_url: str, tmp_path: Path) -> None:
    cfg = ship_cfg(tmp_path / "ch")
    before = m.LEDGER_SHIP_RECORDS.labels("trimmed")._value.get()

    async def body(redis: Redis) -> tuple[Shipper, int]:
        ids = await add_records(redis, 10)
        await redis.xgroup_create(STREAM, cfg.group, id="0")
        await redis.xreadgroup(cfg.group, cfg.consumer, {STREAM: ">"}, count=4)  # read, then "crashed"
        await redis.xdel(STREAM, *ids[:2])  # two of them deleted before they were shipped
        shipper = await ship_all(redis, cfg)
        return shipper, (await redis.xpending(STREAM, cfg.group))["pending"]

    shipper, pending = run(valkey_url, body)
    assert shipper.shipped == 8 and shipper.trimmed == 2 and pending == 0
    assert m.LEDGER_SHIP_RECORDS.labels("trimmed")._value.get() - before == 2


def test_ledger_ship_command_and_config(valkey_url: str, tmp_path: Path) -> None:
    """`sidegate ledger ship -c CONFIG` end to end: the config's section, a new group at `since`."""
    cfg_path = tmp_path / "sidegate.yaml"
    cfg_path.write_text(
        MINIMAL
        + f"observability:\n  ledger_ship:\n    url: chdb://{tmp_path / 'ch'}\n    since: '1765000000000-0'\n"
        "    batch_size: 16\n    flush_interval_s: 0.05\n"
    )
    assert config_mod.load(cfg_path).observability.ledger_ship.batch_size == 16

    async def body(redis: Redis) -> int:
        await redis.xadd(STREAM, LedgerRecord(ts=1.0, tenant="ancient").to_fields(), id="1000-0")  # type: ignore[arg-type]
        await add_records(redis, 50)
        return 0

    run(valkey_url, body)
    proc = subprocess.run(
        [*service_cmd(), "ledger", "ship", "-c", str(cfg_path), "--redis-url", valkey_url, "--create-tables"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "shipped 50 records" in proc.stderr  # the record before `since` was not shipped
    assert_exactly_once(tmp_path / "ch", 50)


def service_cmd() -> list[str]:
    return [sys.executable, "-m", "sidegate.cli"]


def test_runner_jobs_follow_the_config() -> None:
    base = yaml.safe_load(MINIMAL)
    cfg = config_mod.parse({**base, "observability": {"ledger_ship": {"url": "chdb:///tmp/x"}}})
    assert service.runner_wanted(cfg) and len(service.ledger_jobs(cfg, None)) == 1  # type: ignore[arg-type]
    assert not service.runner_wanted(config_mod.parse(base))


class SlowSink(ChdbSink):
    async def insert(self, body: bytes, token: str) -> None:
        await asyncio.sleep(0.03)
        await super().insert(body, token)


def test_store_restart_mid_run_is_ridden_out(tmp_path: Path) -> None:
    """The store stops (SIGTERM) while the shipper follows it and comes back from its append-only
    file: the shipper retries with back-off and every record still lands exactly once."""
    port = free_port()
    data = tmp_path / "valkey"
    data.mkdir()
    cmd = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
           "--appendfsync", "always", "--dir", str(data)]  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    cfg = ship_cfg(tmp_path / "ch", batch_size=10, retry_max_s=0.2)
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL)]
    try:
        wait_for_port("127.0.0.1", port, 10.0, procs[0])

        async def body() -> int:
            redis = client(url, socket_timeout_s=2.0)
            await add_records(redis, 100)
            sink = SlowSink(str(tmp_path / "ch"), "sidegate", "ledger")
            shipper = Shipper(redis, sink, cfg)
            stop = asyncio.Event()
            assert await shipper.connect(stop, True)
            task = asyncio.create_task(shipper.run(stop))
            await asyncio.sleep(0.15)
            procs[0].terminate()
            await asyncio.to_thread(procs[0].wait, 10)
            await asyncio.sleep(0.5)  # the shipper meets a dead store for a while
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
            await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 10.0, procs[-1])
            await add_records(redis, 50, start=100)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and await shipper.update_lag() != 0:
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.wait_for(task, 10)
            await sink.close()
            await redis.aclose()
            return sum(m.STORE_ERRORS.labels("ledger_ship", op)._value.get() for op in ("stream", "xack"))

        assert asyncio.run(body()) >= 1  # it did meet the dead store
        assert_exactly_once(tmp_path / "ch", 150)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def test_a_table_older_than_the_record_still_takes_inserts(valkey_url: str, tmp_path: Path) -> None:
    """A record field the table lacks (Sidegate upgraded before the ALTER TABLE) is left out, not a
    batch refused forever."""
    cfg = ship_cfg(tmp_path / "ch")

    async def body(redis: Redis) -> int:
        sink = ChdbSink(str(tmp_path / "ch"), "sidegate", "ledger")
        await sink.open()
        await sink.create_tables()
        await sink._run.call(sink._query, "ALTER TABLE sidegate.ledger DROP COLUMN ttft_ms")
        await sink.close()
        await add_records(redis, 30)
        return (await ship_all(redis, cfg.model_copy(update={"create_tables": False}))).shipped

    assert run(valkey_url, body) == 30
    counts = asyncio.run(clickhouse(tmp_path / "ch", "SELECT count() AS n FROM sidegate.ledger"))[0]
    assert counts == [{"n": 30}]

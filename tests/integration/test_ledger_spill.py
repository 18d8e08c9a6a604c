"""The usage ledger's bound without loss, against a real valkey-server that is stopped and restarted:
a full queue and a store that is down both go to the spill file, replayed in order and exactly once
when the store is back; the spill's byte bound; a dead writer's spill adopted by the next one."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidegate import metrics as m
from sidegate.features.ledger import ledger
from sidegate.features.ledger.ledger import Ledger, LedgerRecord
from sidegate.features.ledger.spill import Spill
from sidegate.features.ledger.trim import unread_trimmed
from sidegate.ports import free_port, wait_for_port
from sidegate.store import Store, open_store
from sidegate.store.redispy import client
from sidegate.store.valkey import valkey_binary


@dataclass
class Valkey:
    """A valkey-server with an append-only file, so a stop and a restart keep the stream."""

    port: int
    data: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, 10.0, self.proc)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture()
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    v = Valkey(free_port(), tmp_path / "valkey")
    v.data.mkdir()
    v.start()
    try:
        yield v
    finally:
        if v.proc is not None and v.proc.poll() is None:
            v.stop()


def rec(i: int) -> LedgerRecord:
    return LedgerRecord(ts=1_700_000_000.0 + i, request_id=f"req-{i}", tenant="acme", model="gpt-4o-mini",
                        status=200, input_tokens=i, output_tokens=1)  # fmt: skip


def outcome(name: str) -> float:
    return m.REGISTRY.get_sample_value("sidegate_ledger_records_total", {"outcome": name}) or 0.0


async def stream_ids(url: str) -> list[str]:
    redis = client(url, socket_timeout_s=2.0)
    try:
        entries = await redis.xrange(ledger.STREAM)
    finally:
        await redis.aclose()
    return [LedgerRecord.from_fields(data).request_id for _, data in entries]


async def submit_paced(led: Ledger, start: int, stop: int, chunk: int = 40) -> None:
    """Submit like a busy gateway: bursts, with the event loop free between them for the writer."""
    for first in range(start, stop, chunk):
        for i in range(first, min(first + chunk, stop)):
            assert led.submit(rec(i)), f"record {i} dropped"
        await asyncio.sleep(0)


def spill_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.jsonl")) if d.exists() else []


def test_full_queue_and_store_down_lose_nothing(valkey: Valkey, tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"

    async def body() -> None:
        store = open_store(valkey.url, socket_timeout_s=0.5)
        dropped = outcome("dropped_full") + outcome("dropped_spill_full") + outcome("dropped_error")
        spilled, replayed = outcome("spilled"), outcome("replayed")
        led = Ledger(store, queue_size=50, overflow=200, batch_size=20, retry_delay_s=0.05,
                     max_retry_delay_s=0.2, spill=Spill(spill_dir, 1 << 20))  # fmt: skip
        # 1. the queue fills before the writer runs: 50 queued, 150 in the overflow, none dropped
        assert all(led.submit(rec(i)) for i in range(200))
        assert led.queue.full() and len(led._overflow) == 150
        led.start()
        assert await led.flush(10.0, replayed=True)
        assert led.spilled > 0 and led.replayed == led.spilled  # the backlog went through the spill
        # 2. the store goes away: records keep coming, the spill takes them
        await submit_paced(led, 200, 260)
        assert await led.flush(10.0)
        valkey.stop()
        await submit_paced(led, 260, 900)
        assert await led.flush(10.0)
        assert led.spill is not None and led.spill.pending and spill_files(spill_dir)
        await asyncio.sleep(0.3)  # a few failed replays (back-off) while the store is down
        await submit_paced(led, 900, 1000)
        # 3. the store is back: the spill is replayed, oldest first, then removed
        valkey.start()
        assert await led.flush(15.0, replayed=True)
        await submit_paced(led, 1000, 1050)
        await led.stop(10.0)
        await store.aclose()
        assert led.dropped == 0
        assert outcome("dropped_full") + outcome("dropped_spill_full") + outcome("dropped_error") == dropped
        assert outcome("spilled") - spilled == led.spilled and outcome("replayed") - replayed == led.replayed
        assert led.written + led.replayed == 1050
        assert spill_files(spill_dir) == [] and not list(spill_dir.glob("*.done"))

    asyncio.run(body())
    ids = asyncio.run(stream_ids(valkey.url))
    assert ids == [f"req-{i}" for i in range(1050)]  # every record, once, in order


def test_spill_bound_drops_loudly(valkey: Valkey, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spill_dir = tmp_path / "spill"
    line = len(orjson.dumps(["0123456789abcdef", 1, rec(100).to_fields()]) + b"\n")  # [writer, batch, fields]
    bound = 30 * line + line // 2  # room for 30 records

    async def body() -> None:
        store = open_store(valkey.url, socket_timeout_s=0.5)
        full = outcome("dropped_spill_full")
        valkey.stop()
        led = Ledger(store, queue_size=20, overflow=20, batch_size=10, retry_delay_s=0.05,
                     max_retry_delay_s=0.1, spill=Spill(spill_dir, bound))  # fmt: skip
        led.start()
        await submit_paced(led, 100, 150, chunk=10)
        assert await led.flush(10.0)
        assert led.spilled == 30 and led.dropped == 20
        assert outcome("dropped_spill_full") == full + 20
        assert led.spill is not None and led.spill.bytes <= bound
        assert m.REGISTRY.get_sample_value("sidegate_ledger_spill_bytes") == led.spill.bytes
        valkey.start()
        assert await led.flush(10.0, replayed=True)
        await led.stop()
        await store.aclose()

    with caplog.at_level("ERROR", logger="sidegate.ledger"):
        asyncio.run(body())
    assert any("spill full" in r.getMessage() for r in caplog.records)
    assert asyncio.run(stream_ids(valkey.url)) == [
        f"req-{i}" for i in range(100, 130)
    ]  # the first 30, in order


def test_dead_writers_spill_is_adopted(valkey: Valkey, tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"

    async def body() -> None:
        store = open_store(valkey.url, socket_timeout_s=0.5)
        valkey.stop()
        first = Ledger(store, batch_size=10, retry_delay_s=0.05, spill=Spill(spill_dir, 1 << 20))
        first.start()
        await submit_paced(first, 0, 25)
        assert await first.flush(5.0)
        await first.stop(0.2)  # the store is still down: the file stays for another writer
        [path] = spill_files(spill_dir)
        # a replay that got 10 records in before its writer died, and a torn last line
        (path.parent / (path.name + ".done")).write_text(
            str(sum(len(x) for x in path.read_bytes().splitlines(True)[:10]))
        )
        with path.open("ab") as fh:
            fh.write(b'{"ts": "1.0", "request_id": "torn')
        valkey.start()
        second = Ledger(store, batch_size=10, retry_delay_s=0.05, spill=Spill(spill_dir, 1 << 20))
        second.start()
        second.submit(rec(25))
        assert await second.flush(10.0, replayed=True)
        await second.stop()
        await store.aclose()
        assert spill_files(spill_dir) == []

    asyncio.run(body())
    assert asyncio.run(stream_ids(valkey.url)) == [f"req-{i}" for i in range(10, 26)]


def test_live_writers_spill_is_not_adopted(tmp_path: Path) -> None:
    live = Spill(tmp_path, 1 << 20)
    assert live.append(("w1", 7), [rec(1).to_fields()]) == 1
    other = Spill(tmp_path, 1 << 20)
    assert other.adopt() == 0 and not other.pending  # locked by its writer
    live.close()
    assert other.adopt() == 0  # adopt runs once per writer
    third = Spill(tmp_path, 1 << 20)
    assert third.adopt() == 1 and third.pending
    got = third.read()
    assert got is not None and got[1] == ("w1", 7) and [f["request_id"] for f in got[2]] == ["req-1"]
    third.commit(got[0], got[3])
    assert not third.pending and list(tmp_path.iterdir()) == []


def test_maxlen_trimming_unread_records_is_reported(valkey: Valkey, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        redis = client(valkey.url, socket_timeout_s=2.0)
        store = open_store(valkey.url, socket_timeout_s=0.5)
        assert await unread_trimmed(store, ledger.STREAM) == 0  # no stream yet
        await redis.xgroup_create(ledger.STREAM, "slow", id="0", mkstream=True)
        led = Ledger(store, maxlen=100, batch_size=50, trim_check_s=0.05)
        led.start()
        for i in range(60):
            led.submit(rec(i))
        assert await led.flush(5.0)
        resp = await redis.xreadgroup("slow", "c", {ledger.STREAM: ">"}, count=50)
        await redis.xack(ledger.STREAM, "slow", *[e for e, _ in resp[0][1]])
        assert await unread_trimmed(store, ledger.STREAM) == 0  # nothing trimmed yet
        for i in range(60, 1000):
            led.submit(rec(i))
        assert await led.flush(5.0)
        removed = 1000 - await redis.xlen(ledger.STREAM)
        assert removed > 800 and await unread_trimmed(store, ledger.STREAM) == removed - 50
        await asyncio.sleep(0.2)  # the writer's companion reports it
        assert m.REGISTRY.get_sample_value("sidegate_ledger_unread_trimmed") == removed - 50
        await led.stop()
        await store.aclose()
        await redis.aclose()

    with caplog.at_level("WARNING", logger="sidegate.ledger"):
        asyncio.run(body())
    assert any("before a consumer group read them" in r.getMessage() for r in caplog.records)


def test_unwritable_spill_drops_loudly_and_never_stalls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")

    async def body() -> None:
        store = open_store(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2)  # nothing listens
        err = outcome("dropped_spill_full") + outcome("dropped_error")
        led = Ledger(
            store, queue_size=5, overflow=5, retry_delay_s=0.01, spill=Spill(not_a_dir / "spill", 1 << 20)
        )
        assert all(led.submit(rec(i)) for i in range(10))  # 5 queued, 5 in the overflow
        led.start()
        assert await led.flush(5.0)  # not stuck behind the overflow
        assert led.submit(rec(10))
        assert await led.flush(5.0)
        await led.stop(0.5)
        await store.aclose()
        assert led.dropped == 11 and led.spilled == 0
        assert outcome("dropped_spill_full") + outcome("dropped_error") == err + 11

    with caplog.at_level("ERROR", logger="sidegate.ledger"):
        asyncio.run(body())
    assert any("cannot write the spill" in r.getMessage() for r in caplog.records)


class LostFirstReply:
    """The store as seen through a link that loses the reply of the first ledger append: the append
    ran, the writer saw a timeout (what a hung or cut connection looks like)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.lost = 0

    async def run_script(self, script: Any, keys: Any, args: Any, timeout_s: float | None = None) -> Any:
        reply = await self.inner.run_script(script, keys, args, timeout_s=timeout_s)
        if not self.lost:
            self.lost += 1
            raise TimeoutError("reply lost")
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_batch_whose_reply_was_lost_is_not_written_twice(valkey: Valkey, tmp_path: Path) -> None:
    async def body() -> None:
        store = open_store(valkey.url, socket_timeout_s=0.5)
        already = outcome("already_written")
        link = LostFirstReply(store)
        led = Ledger(link, batch_size=10, retry_delay_s=0.01, spill=Spill(tmp_path / "spill", 1 << 20))  # type: ignore[arg-type]
        led.start()
        await submit_paced(led, 0, 30, chunk=10)
        assert await led.flush(10.0, replayed=True)
        await led.stop()
        await store.aclose()
        assert link.lost == 1 and led.spilled == 30 and led.replayed == 20 and led.written == 0
        assert outcome("already_written") == already + 10

    asyncio.run(body())
    assert asyncio.run(stream_ids(valkey.url)) == [f"req-{i}" for i in range(30)]

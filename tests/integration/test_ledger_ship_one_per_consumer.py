"""Two shippers under one consumer name (the default, the host name: `sidegate ledger ship` by hand
beside the one `sidegate up` runs) must not store records twice: the second waits for the first's
lease instead of re-sending, as "its own pending batch", the entries the first is still gathering
into a batch (real valkey-server; a sink that deduplicates by token as ClickHouse does)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
from ledger_ship_helpers import add_records, run
from redis.asyncio import Redis
from valkey_helpers import valkey

from sidegate.config.ledger_ship import LedgerShipConfig
from sidegate.features.ledger.lease import ConsumerLease
from sidegate.features.ledger.ledger import STREAM
from sidegate.features.ledger.ship import Shipper


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    with valkey() as url:
        yield url


class DedupSink:
    """Keeps the rows of each token once (ClickHouse's insert deduplication)."""

    name = "memory"

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.ids: list[str] = []

    async def open(self) -> None: ...
    async def create_tables(self) -> None: ...
    async def close(self) -> None: ...

    async def insert(self, body: bytes, token: str) -> None:
        if token not in self.tokens:
            self.tokens.add(token)
            self.ids.extend(orjson.loads(line)["id"] for line in body.splitlines())


def cfg(**kw: object) -> LedgerShipConfig:
    return LedgerShipConfig(url="chdb:///unused", consumer="same-host", batch_size=100, flush_interval_s=2.0,
                            retry_initial_s=0.05, retry_max_s=0.2, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_a_second_shipper_under_the_same_name_waits_instead_of_doubling(valkey_url: str) -> None:
    sink = DedupSink()

    async def body(redis: Redis) -> tuple[int, int]:
        await add_records(redis, 50)
        first_stop, second_stop = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(Shipper(redis, sink, cfg()).run(first_stop))
        await asyncio.sleep(0.5)  # the first has read the 50 and waits (flush_interval) for more
        second = Shipper(redis, sink, cfg())
        second_run = asyncio.create_task(second.run(second_stop, follow=False))
        await asyncio.sleep(0.5)
        await add_records(redis, 10, start=50)  # the first's batch grows to 60
        await asyncio.sleep(2.0)
        first_stop.set()
        await asyncio.wait_for(first, 10)
        second_stop.set()
        await asyncio.wait_for(second_run, 10)
        return second.shipped, (await redis.xpending(STREAM, "clickhouse"))["pending"]

    shipped_by_second, pending = run(valkey_url, body)
    assert len(sink.ids) == len(set(sink.ids)) == 60, (len(sink.ids), len(set(sink.ids)))
    assert pending == 0 and shipped_by_second == 0


def test_a_killed_holders_lease_on_this_host_is_taken_at_once(valkey_url: str) -> None:
    """A restart after a crash (SIGKILL: no release) does not wait for the lease to expire."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)

    async def body(redis: Redis) -> tuple[bool, bool]:
        lease = ConsumerLease(redis, STREAM, "clickhouse", "same-host")
        await redis.set(lease.key, f"{lease.host} {dead_pid} 0123456789abcdef", px=30_000)
        taken = await lease.take()
        await lease.release()
        # a restarted container's process: the holder's pid again (pid 1), started earlier
        await redis.set(lease.key, f"{lease.host} {os.getpid()}:1 0123456789abcdef", px=30_000)
        taken = taken and await lease.take()
        await lease.release()
        await redis.set(lease.key, f"other-host {os.getpid()} 0123456789abcdef", px=30_000)
        elsewhere = await lease.take()  # another host's holder: only its expiry frees it
        return taken, elsewhere

    assert run(valkey_url, body) == (True, False)

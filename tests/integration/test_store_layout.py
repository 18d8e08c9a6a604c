"""migrate_layout (sidegate/store/layout.py) on a real Valkey: run by two processes at once (as every
process of a stack does at its start) one copies and the other waits for its marker; a copier
that died leaves a lock that expires; once the marker is there a start costs one GET."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from quota_helpers import Server, running_server
from redis.asyncio import Redis

from sidegate import keystore
from sidegate.store import client
from sidegate.store.layout import LOCK, MIGRATED, migrate_layout

N_KEYS = 200


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("valkey") as srv:
        yield srv


async def _old_layout(r: Redis) -> None:
    await r.flushall()
    pipe = r.pipeline(transaction=False)
    for i in range(N_KEYS):
        pipe.hset(f"sg:key:k{i}", mapping={"tenant": f"t{i % 7}", "hash": f"sha256:{i}", "revoked": "0"})
        pipe.sadd("sg:keys", f"k{i}")
    pipe.sadd("sg:tenants", *(f"t{i}" for i in range(7)))
    pipe.set("sg:keys:version", N_KEYS)
    await pipe.execute()


async def _check_copied(r: Redis) -> None:
    assert await r.get(MIGRATED) == b"2" and await r.exists(LOCK) == 0
    assert await r.scard(keystore.KEY_SET) == N_KEYS and await r.scard("sg:keys") == N_KEYS
    assert await r.hget(keystore.record_key(f"k{N_KEYS - 1}"), "tenant") == f"t{(N_KEYS - 1) % 7}".encode()
    assert await r.get(keystore.VERSION) == str(N_KEYS).encode()


def test_two_processes_at_once_one_copies_the_other_waits(server: Server) -> None:
    async def go() -> None:
        a, b = client(server.url), client(server.url)  # two processes' clients
        try:
            await _old_layout(a)
            got = await asyncio.gather(migrate_layout(a), migrate_layout(b))
            # N_KEYS records, the two sets and the version counter, copied by one of them.
            assert sorted(got) == [0, N_KEYS + 3], got
            await _check_copied(a)
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(go())


def test_a_dead_copier_s_lock_expires_and_another_process_copies(server: Server) -> None:
    async def go() -> None:
        r = client(server.url)
        try:
            await _old_layout(r)
            await r.set(LOCK, "a-process-that-died", px=300)
            assert await asyncio.wait_for(migrate_layout(r), 10) == N_KEYS + 3
            await _check_copied(r)
        finally:
            await r.aclose()

    asyncio.run(go())


def test_with_the_marker_a_start_is_one_get(server: Server) -> None:
    async def go() -> None:
        r = client(server.url)
        try:
            await _old_layout(r)
            assert await migrate_layout(r) == N_KEYS + 3
            sent: list[tuple[Any, ...]] = []
            send = r.execute_command

            async def counted(*args: Any, **kw: Any) -> Any:
                sent.append(args)
                return await send(*args, **kw)

            r.execute_command = counted  # type: ignore[method-assign]
            assert await migrate_layout(r) == 0
            assert sent == [("GET", MIGRATED)]
        finally:
            await r.aclose()

    asyncio.run(go())

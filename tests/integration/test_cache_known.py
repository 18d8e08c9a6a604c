"""The local index of the store's exact-cache entries (sidegate/features/cache/known.py) against a real
valkey-server: a miss without a store call, other processes' fills, entries already in the store,
expiry, FLUSHALL, a lost tracking connection, a store that refuses tracking, the size bound."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as sync_redis
from redis.asyncio import Redis

from sidegate.features.cache import CachePolicy, ResponseCache
from sidegate.features.cache.core import CACHE_PREFIX
from sidegate.features.cache.known import PROBE_TIMEOUT_S, KnownKeys
from sidegate.ports import free_port, wait_for_port
from sidegate.store import LeanStore, RedisPyStore
from sidegate.store.redispy import client as store_client
from sidegate.store.valkey import embedded_valkey_cmd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_helpers import openai_response, req, valkey_server

POLICY = CachePolicy(exact=True, ttl_s=60)
ANSWER = orjson.dumps(openai_response())


@pytest.fixture(scope="module")
def redis_url():
    with valkey_server() as (url, _):
        yield url


async def _until(cond: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.005)
    return True


async def _gets(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def fill_elsewhere(url: str, tenant: str) -> None:
    """Another gateway's fill: a cache entry written by another client (not this process's)."""
    redis = store_client(url)
    try:
        assert await ResponseCache(RedisPyStore(redis)).fill(req(tenant=tenant), ANSWER, POLICY)
    finally:
        await redis.aclose()


def run(url: str, body: Callable[[ResponseCache, KnownKeys, Redis], Awaitable[Any]], max_keys: int = 500_000) -> Any:
    """`body(cache, known, redis)` with a cache whose index (`known`) tracks the store (waits until
    it is trusted)."""

    async def main() -> Any:
        redis = store_client(url)
        store = LeanStore.from_url(url, store_client(url))
        assert store is not None
        known = KnownKeys(CACHE_PREFIX, keep_s=60, max_keys=max_keys)
        cache = ResponseCache(store, known=known)
        known.start(store, redis)
        try:
            assert await _until(lambda: known.synced), "the index never became trusted"
            return await body(cache, known, redis)
        finally:
            await known.close()
            await store.aclose()
            await redis.aclose()

    return asyncio.run(main())


def test_a_miss_asks_the_store_nothing_and_a_fill_is_known_at_once(redis_url):
    async def body(cache: ResponseCache, known: KnownKeys, redis: Redis) -> None:
        r = req(tenant="idx-miss")
        before = await _gets(redis)
        assert cache.prefetch(r, POLICY) is None  # nothing sent
        assert await cache.lookup(r, POLICY) is None
        assert cache.stats.misses == 1 and not r.lookup_failed
        assert await _gets(redis) == before  # (INFO itself is not a GET)
        reported = known.reported
        assert await cache.fill(r, ANSWER, POLICY)
        hit = await cache.lookup(req(tenant="idx-miss"), POLICY)  # right after: our own fill is known
        assert hit is not None and hit.kind == "exact"
        assert await _gets(redis) == before + 1
        await asyncio.sleep(0.1)
        assert known.reported == reported  # the store does not report this process's own writes

    run(redis_url, body)


def test_another_gateways_fill_and_entries_already_in_the_store_are_found(redis_url):
    asyncio.run(fill_elsewhere(redis_url, "idx-before"))  # before this process starts tracking

    async def body(cache: ResponseCache, known: KnownKeys, redis: Redis) -> None:
        assert await cache.lookup(req(tenant="idx-before"), POLICY) is not None  # read at start (SCAN)
        await fill_elsewhere(redis_url, "idx-other")  # while tracking: the store reports it
        key = cache.prefix + req(tenant="idx-other").exact_key
        assert await _until(lambda: known.may_exist(key), 2.0)
        assert await cache.lookup(req(tenant="idx-other"), POLICY) is not None

    run(redis_url, body)


def test_expired_and_flushed_entries_cost_one_get_then_none(redis_url):
    async def body(cache: ResponseCache, known: KnownKeys, redis: Redis) -> None:
        short = CachePolicy(exact=True, ttl_s=1)
        r = req(tenant="idx-exp")
        key = cache.prefix + r.exact_key
        assert await cache.fill(r, ANSWER, short)
        await asyncio.sleep(1.2)
        before = await _gets(redis)
        assert await cache.lookup(req(tenant="idx-exp"), short) is None  # asks: the index may be behind
        assert await _gets(redis) == before + 1
        # The nil drops it once the write is no longer recent (a nil may predate a fresh write).
        known._recent.clear()
        await cache.lookup(req(tenant="idx-exp"), short)
        assert not known.may_exist(key)
        # A FLUSHALL: the index reads the store again (keys it still lists cost a GET each).
        assert await cache.fill(req(tenant="idx-flush"), ANSWER, POLICY)
        loads = known._probe_n
        await redis.flushall()
        assert await _until(lambda: known._probe_n > loads and known.synced, 5.0)
        assert await cache.lookup(req(tenant="idx-flush"), POLICY) is None

    run(redis_url, body)


def test_a_flush_of_another_database_keeps_this_ones_entries(redis_url):
    """Every FLUSHDB is reported to every tracking client as a flush, whatever the database: the
    index reads the store again instead of forgetting entries that are still there."""

    async def body(cache: ResponseCache, known: KnownKeys, redis: Redis) -> None:
        assert await cache.fill(req(tenant="idx-db"), ANSWER, POLICY)
        loads = known._probe_n
        other_db = store_client(redis_url.rsplit("/", 1)[0] + "/1")
        try:
            await other_db.set("unrelated", "1")
            await other_db.flushdb()
        finally:
            await other_db.aclose()
        assert await _until(lambda: known._probe_n > loads and known.synced, 5.0)
        assert known.may_exist(cache.prefix + req(tenant="idx-db").exact_key)
        assert await cache.lookup(req(tenant="idx-db"), POLICY) is not None

    run(redis_url, body)


def test_a_nil_answered_before_another_fill_does_not_hide_that_fill(redis_url):
    """Lookup GET answered nil; meanwhile another process fills the key and the store reports it;
    the nil then reaches the lookup: the key must stay known."""

    async def body(cache: ResponseCache, known: KnownKeys, redis: Redis) -> None:
        r = req(tenant="idx-race")
        key = cache.prefix + r.exact_key
        known.add(key)  # (so the lookup asks the store)
        known._recent.clear()
        sent = cache.prefetch(r, POLICY)
        assert sent is not None
        assert await asyncio.shield(sent) is None  # the store answered nil
        reported = known.reported
        await fill_elsewhere(redis_url, "idx-race")  # another process fills; the store reports it
        assert await _until(lambda: known.reported > reported, 2.0)
        assert await cache.lookup(r, POLICY, sent) is None  # the nil, read now
        assert known.may_exist(key)
        assert await cache.lookup(req(tenant="idx-race"), POLICY) is not None

    run(redis_url, body)


def test_a_lost_tracking_connection_asks_the_store_until_it_is_back(redis_url):
    async def body(cache: ResponseCache, known: KnownKeys, redis: Redis) -> None:
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # the tracking connection
        assert await _until(lambda: not known.synced, 2.0)
        # Meanwhile another client fills: unsynced, the lookup asks the store and finds it.
        await fill_elsewhere(redis_url, "idx-lost")
        assert await cache.lookup(req(tenant="idx-lost"), POLICY) is not None
        assert await _until(lambda: known.synced, 5.0)  # reconnected and the store read again
        assert known.may_exist(cache.prefix + req(tenant="idx-lost").exact_key)
        assert await cache.lookup(req(tenant="idx-lost"), POLICY) is not None

    run(redis_url, body)


def test_a_lost_store_connection_asks_the_store_until_the_index_is_read_again(redis_url):
    async def body(cache: ResponseCache, known: KnownKeys, redis: Redis) -> None:
        assert isinstance(cache.store, LeanStore)
        await cache.store.aclose()  # the process's store connection (its tracking) is gone
        assert not known.synced
        await fill_elsewhere(redis_url, "idx-gap")  # written while nothing reports to this process
        # The next lookup asks the store (and reconnects); the index is read again and trusted.
        assert await cache.lookup(req(tenant="idx-gap"), POLICY) is not None
        assert await _until(lambda: known.synced, 5.0)
        assert known.may_exist(cache.prefix + req(tenant="idx-gap").exact_key)
        reported = known.reported
        await fill_elsewhere(redis_url, "idx-after")  # the new connection asked for reports again
        assert await _until(lambda: known.reported > reported, 2.0)

    run(redis_url, body)


def test_past_its_size_the_index_asks_the_store_every_time_and_stops_tracking(redis_url):
    async def body(cache: ResponseCache, known: KnownKeys, redis: Redis) -> None:
        for i in range(1001):
            known.add(f"{CACHE_PREFIX}bulk{i}")
        assert known.overflowed and not known.synced
        r = req(tenant="idx-full")
        before = await _gets(redis)
        assert await cache.lookup(r, POLICY) is None
        assert await _gets(redis) == before + 1
        assert await _until(lambda: known._task is not None and known._task.done(), 2.0)
        assert await _until(lambda: _pubsub_clients_sync(redis_url) == 0, 2.0)  # the listener is gone
        assert isinstance(cache.store, LeanStore) and cache.store.tracking is None

    run(redis_url, body, max_keys=1000)


def _pubsub_clients_sync(url: str) -> int:
    r = sync_redis.Redis.from_url(url)
    try:
        return len(r.client_list(_type="pubsub"))
    finally:
        r.close()


@contextlib.contextmanager
def own_valkey(*args: str) -> Iterator[str]:
    """A throwaway valkey-server started with extra arguments: yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sidegate-known-") as d:
        proc = subprocess.Popen([*embedded_valkey_cmd(port, Path(d)), *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for_port("127.0.0.1", port, timeout_s=10, proc=proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait(timeout=5)


def assert_gives_up(store_url: str, scan_url: str, within_s: float) -> None:
    """An index tracking the store at `store_url` (listing it and writing its probe through
    `scan_url`) gives up within `within_s` for good: its task ends, it is never trusted, every
    lookup asks the store, and the store connection no longer asks for reports."""

    async def main() -> None:
        scan = store_client(scan_url)
        store = LeanStore.from_url(store_url, store_client(store_url))
        assert store is not None
        known = KnownKeys(CACHE_PREFIX, keep_s=60)
        try:
            known.start(store, scan)
            assert await _until(lambda: known._task is not None and known._task.done(), within_s)
            assert not known.synced and known.may_exist(CACHE_PREFIX + "anything") and store.tracking is None
        finally:
            await known.close()
            await store.aclose()
            await scan.aclose()

    asyncio.run(main())


def test_a_store_that_refuses_tracking_leaves_the_index_off():
    """A store without CLIENT (renamed away here): the listener's first command is refused."""
    with own_valkey("--rename-command", "CLIENT", "") as url:
        assert_gives_up(url, url, 0.3)


def test_a_store_connection_refused_tracking_leaves_the_index_off():
    """The store lets the listener subscribe but refuses CLIENT TRACKING to the store connection (an
    ACL here; Dragonfly and Redis < 6 refuse the command)."""
    with own_valkey() as url:
        admin = sync_redis.Redis.from_url(url)
        admin.execute_command("ACL", "SETUSER", "default", "-client|tracking")
        admin.close()
        assert_gives_up(url, url, 2.0)


def test_a_store_that_takes_tracking_but_never_reports_leaves_the_index_off(redis_url):
    """The probe write goes to another server (as a sharding proxy might route it): no report comes
    back, so after PROBE_TRIES probes (with back-off between them) the index is off for good."""
    with valkey_server() as (elsewhere_url, _):
        assert_gives_up(redis_url, elsewhere_url, 3 * PROBE_TIMEOUT_S + 5)


def test_entries_are_kept_for_one_to_two_generations():
    async def main() -> None:
        known = KnownKeys(CACHE_PREFIX, keep_s=0.05)
        known.synced = True  # (trusted, as after the store was read)
        known.add("a")
        assert known.may_exist("a") and not known.may_exist("b")
        await asyncio.sleep(0.06)
        known.add("b")  # a new generation: "a" is in the older one
        assert known.may_exist("a") and known.may_exist("b")
        await asyncio.sleep(0.06)
        known.add("c")  # the generation holding "a" is dropped
        assert not known.may_exist("a") and known.may_exist("b") and known.may_exist("c")
        known.discard("b")  # a nil GET right after "b" was written may predate the write: kept
        assert known.may_exist("b")
        known._recent.clear()
        known.discard("b")
        assert not known.may_exist("b")

    asyncio.run(main())

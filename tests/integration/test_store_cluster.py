"""The store as a real 3-node Redis Cluster: both clients follow a slot's migration (ASK while it
moves, MOVED once it has), a cross-slot command is refused clearly, pub/sub reaches a subscriber on
another node, the URL is validated, and the cache's key index is switched off with a log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from cluster_helpers import StoreCluster, running_cluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, ResponseError

from sidegate import config as config_mod
from sidegate import routingstore
from sidegate.config import SidegateConfig
from sidegate.features.cache import CachePolicy
from sidegate.features.cache.feature import known_keys
from sidegate.store import ClusterStore, CrossSlotError, LuaScript, RedisPyStore, client, open_store


@pytest.fixture(scope="module")
def store_cluster() -> Iterator[StoreCluster]:
    with running_cluster() as c:
        yield c


MINIMAL = {
    "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
    "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
}


def _config(url: str) -> SidegateConfig:
    return config_mod.parse({**MINIMAL, "store": {"url": url}}, env={})


def _owner_index(c: StoreCluster, slot: int) -> int:
    with c.node(0) as r:
        for start, end, primary, *_ in r.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return c.ports.index(int(primary[1]))
    raise AssertionError(f"slot {slot} unowned")


def _node_id(c: StoreCluster, i: int) -> str:
    with c.node(i) as r:
        got = r.execute_command("CLUSTER", "MYID")
    return got.decode() if isinstance(got, bytes) else str(got)


def test_both_clients_follow_ask_then_moved_while_a_slot_migrates(store_cluster: StoreCluster) -> None:
    c = store_cluster
    c.flush()
    key = "sg:mig:{slot-under-test}"
    slot = key_slot(key.encode())
    src = _owner_index(c, slot)
    dst = (src + 1) % len(c.ports)

    async def go() -> None:
        lean = open_store(c.url)
        py = RedisPyStore(client(c.url))
        assert isinstance(lean, ClusterStore)
        try:
            await lean.command("SET", key, "before", timeout_s=2.0)
            assert lean.map_reads == 1 and lean.redirects == 0
            # Migration under way: the key already moved to dst, the slot still owned by src -> ASK.
            src_id, dst_id = _node_id(c, src), _node_id(c, dst)
            with c.node(dst) as r:
                r.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            with c.node(src) as r:
                r.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
                r.execute_command("MIGRATE", "127.0.0.1", c.ports[dst], key, 0, 5000)
            assert await lean.command("GET", key, timeout_s=2.0) == b"before"
            assert lean.redirects == 1  # one ASK, the map unchanged (the slot is still src's)
            assert await py.command("GET", key, timeout_s=2.0) == b"before"
            script = LuaScript("mig", "return redis.call('GET', KEYS[1])")
            assert await lean.run_script(script, [key], [], timeout_s=2.0) == b"before"
            # Migration done: every node says dst owns the slot -> MOVED, and the map is read again.
            for i in range(len(c.ports)):
                with c.node(i) as r:
                    r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            await lean.command("SET", key, "after", timeout_s=2.0)
            assert await lean.command("GET", key, timeout_s=2.0) == b"after"
            for _ in range(50):  # the map is read again in the background after a MOVED
                if lean.map_reads >= 2:
                    break
                await asyncio.sleep(0.02)
            assert lean.map_reads >= 2
            before = lean.redirects
            assert await lean.command("GET", key, timeout_s=2.0) == b"after" and lean.redirects == before
            assert await py.command("GET", key, timeout_s=2.0) == b"after"
        finally:
            await lean.aclose()
            await py.aclose()

    asyncio.run(go())


def test_a_cross_slot_command_is_refused_clearly(store_cluster: StoreCluster) -> None:
    c = store_cluster

    async def go() -> None:
        lean = open_store(c.url)
        try:
            script = LuaScript("two", "return 1")
            with pytest.raises(
                CrossSlotError, match="CROSSSLOT EVALSHA: its keys are in different hash slots"
            ):
                await lean.run_script(script, ["{tenant-a}:w", "{tenant-b}:w"], [], timeout_s=2.0)
            # Keys of one hash tag are fine, as the quota's are.
            assert await lean.run_script(script, ["{tenant-a}:w", "{tenant-a}:usd"], [], timeout_s=2.0) == 1
            with pytest.raises(ResponseError, match="CROSSSLOT"):  # the server's own refusal, passed on
                await lean.command("MGET", "{tenant-a}:w", "{tenant-b}:w", timeout_s=2.0)
            # redis-py's cluster client refuses a cross-slot transaction before sending it.
            with pytest.raises(RedisClusterException):
                async with lean.redis.pipeline(transaction=True) as pipe:
                    pipe.set("{tenant-a}:x", 1)
                    pipe.set("{tenant-b}:x", 1)
                    await pipe.execute()
        finally:
            await lean.aclose()

    asyncio.run(go())


def test_pubsub_reaches_a_subscriber_on_another_node(store_cluster: StoreCluster) -> None:
    """The routing change channel: PUBLISH on any node is broadcast to every node's subscribers."""
    c = store_cluster

    async def go() -> None:
        sub = client(c.url)
        try:
            async with sub.pubsub() as ps:
                await ps.subscribe(routingstore.CHANNEL)
                assert (await ps.get_message(timeout=2.0))["type"] == "subscribe"  # type: ignore[index]
                for i in range(len(c.ports)):  # from each node in turn
                    with c.node(i) as r:
                        assert r.publish(routingstore.CHANNEL, str(i)) >= 0
                got = []
                for _ in range(50):
                    m = await ps.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if m is not None:
                        got.append(m["data"])
                    if len(got) == len(c.ports):
                        break
                assert got == [str(i).encode() for i in range(len(c.ports))]
        finally:
            await sub.aclose()

    asyncio.run(go())


@pytest.mark.parametrize(
    "url, problem",
    [
        ("redis+cluster://127.0.0.1:7000/1", "takes no database number"),
        ("redis+cluster://127.0.0.1:7000?x=1", "no database number or options"),
        ("redis+cluster://127.0.0.1", "is not host:port"),
        ("redis+cluster://127.0.0.1:7000,:7001", "is not host:port"),
    ],
)
def test_a_bad_cluster_url_is_refused_at_load(url: str, problem: str) -> None:
    with pytest.raises(config_mod.ConfigError, match=problem):
        _config(url)


def test_a_cluster_url_is_taken_from_the_environment() -> None:
    url = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
    cfg = config_mod.parse(dict(MINIMAL), env={"SIDEGATE_REDIS_URL": url})
    assert cfg.store.url == url
    with pytest.raises(config_mod.ConfigError, match="is not host:port"):
        config_mod.parse(dict(MINIMAL), env={"SIDEGATE_REDIS_URL": "redis+cluster://10.0.0.1"})


def test_the_cache_key_index_is_off_on_a_cluster_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        store = open_store("redis+cluster://127.0.0.1:9")
        try:
            cfg = _config("redis+cluster://127.0.0.1:9")
            with caplog.at_level(logging.INFO, logger="sidegate.cache"):
                assert known_keys(cfg, [CachePolicy(exact=True, ttl_s=60)], store) is None
            assert "local key index off" in caplog.text
        finally:
            await store.aclose()

    asyncio.run(go())


def test_a_store_of_the_old_layout_is_renamed_under_the_config_tag() -> None:
    """Keys written before the `{sg}` hash tag are renamed once; a key already there is kept; the
    request path's keys are left alone."""
    from quota_helpers import running_server

    from sidegate import keystore
    from sidegate.store.layout import migrate_layout

    async def go(url: str) -> None:
        r = client(url)
        try:
            await r.sadd("sg:keys", "k1")
            await r.hset("sg:key:k1", mapping={"tenant": "acme"})
            await r.set("sg:routing:version", 3)
            await r.set("{sg}:routing:version", 7)  # already under the new name: kept
            await r.set("sg:lat:x", 1)
            await r.sadd(keystore.KEY_SET, "k0")  # a new process seeded first: the sets merge
            await r.hset("sg:ledger:writers", mapping={"w1": 5, "w2": 1})
            await r.hset("{sg:ledger}:writers", mapping={"w2": 3})
            assert await migrate_layout(r) == 2
            assert await r.smembers(keystore.KEY_SET) == {b"k0", b"k1"}
            assert await r.hgetall("{sg:ledger}:writers") == {b"w1": b"5", b"w2": b"3"}
            # copied, not renamed: an old process in a rolling upgrade still reads its keys
            assert await r.smembers("sg:keys") == {b"k1"} and await r.hget("sg:key:k1", "tenant") == b"acme"
            assert await r.hget(keystore.record_key("k1"), "tenant") == b"acme"
            assert await r.get(routingstore.VERSION) == b"7" and await r.get("sg:lat:x") == b"1"
            assert await migrate_layout(r) == 0  # once
        finally:
            await r.aclose()

    with running_server("valkey") as srv:
        asyncio.run(go(srv.url))

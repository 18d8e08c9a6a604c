"""Both store clients behind the one protocol, against a real Valkey: the same replies (of the
commands the gateway reads) and errors for command, commands, run_script (NOSCRIPT reload) and the
time limit; the factory's choice. The same body runs on a real 3-node store cluster through both
cluster clients (the lean one per node, redis-py's RedisCluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from cluster_helpers import StoreCluster, running_cluster
from quota_helpers import running_server
from redis.exceptions import ResponseError

from sidegate.store import ClusterStore, LeanStore, LuaScript, RedisPyStore, Store, client, open_store

CLIENTS = ["lean", "redis-py"]


@pytest.fixture(scope="module")
def store_cluster() -> Iterator[StoreCluster]:
    with running_cluster() as c:
        yield c


def _run(kind: str, url: str, body: Callable[[Store], Awaitable[None]]) -> None:
    async def go() -> None:
        store: Store = LeanStore.from_url(url, client(url)) or RedisPyStore(client(url)) if kind == "lean" \
            else RedisPyStore(client(url))  # fmt: skip
        if url.startswith("redis+cluster://"):
            store = open_store(url) if kind == "lean" else RedisPyStore(client(url))
        assert isinstance(store, (LeanStore, ClusterStore) if kind == "lean" else RedisPyStore)
        try:
            await body(store)
        finally:
            await store.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("kind", CLIENTS)
def test_commands_scripts_and_time_limits_behave_the_same(kind: str) -> None:
    with running_server("valkey") as srv:
        _run(kind, srv.url, _same_behaviour)


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_same_on_a_store_cluster(store_cluster: StoreCluster, kind: str) -> None:
    store_cluster.flush()
    _run(kind, store_cluster.url, _same_behaviour)


async def _same_behaviour(store: Store) -> None:
    await store.command("SET", "p:k", "v", timeout_s=1.0)  # redis-py answers True, the lean one b"OK"
    assert await store.command("GET", "p:k") == b"v"
    await store.command("SET", "p:lazy", "w", lazy=True)
    assert await store.command("GET", "p:lazy") == b"w"
    with pytest.raises(ResponseError):
        await store.command("INCR", "p:k")
    got = await store.commands([("XADD", "p:s", "MAXLEN", "~", 100, "*", "f", str(i)) for i in range(3)], lazy=True)
    assert len(got) == 3 and await store.command("XLEN", "p:s") == 3
    script = LuaScript("p", "return ARGV[1] * 2")
    await store.command("SCRIPT", "FLUSH")
    assert await store.run_script(script, [], [21], timeout_s=1.0) == 42 and script.reloads == 1
    assert await store.run_script(script, [], [2]) == 4 and script.reloads == 1
    await store.command("SCRIPT", "FLUSH")
    await store.load_script(script)
    assert await store.run_script(script, [], [3]) == 6 and script.reloads == 1
    with pytest.raises(TimeoutError):
        await store.command("BLPOP", "p:empty", 1, timeout_s=0.1)
    assert await store.redis.get("p:k") == b"v"  # redis-py on the same store
    sent = store.send_now("GET", "p:k", timeout_s=1.0)
    if isinstance(store, LeanStore):
        assert sent is not None and await sent == b"v" and store.tracked is store
    elif isinstance(store, ClusterStore):  # sent to the key's node; no one connection to track on
        assert sent is not None and await sent == b"v" and store.tracked is None
    else:
        assert sent is None and store.tracked is None


def test_the_factory_takes_the_lean_client_where_it_can() -> None:
    async def go() -> None:
        for url, lean in (("redis://127.0.0.1:9/0", True), ("rediss://127.0.0.1:9/0", False),
                          ("unix:///tmp/none.sock", False), ("redis://127.0.0.1:9/0?socket_keepalive=1", False)):  # fmt: skip
            store = open_store(url)
            assert isinstance(store, LeanStore) == lean and isinstance(store, RedisPyStore) != lean, url
            await store.aclose()
        store = open_store("redis+cluster://127.0.0.1:9,127.0.0.1:10")
        assert isinstance(store, ClusterStore) and store.seeds == [("127.0.0.1", 9), ("127.0.0.1", 10)]
        await store.aclose()

    asyncio.run(go())

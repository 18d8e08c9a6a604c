"""The store cluster losing a node, with real redis-server processes: a primary killed and its
replica promoted, a primary replaced by a node at a new address (the slot map changes without a
MOVED from the dead node), and an ACL user in the URL. Both clients as Sidegate builds them (the
lean cluster client and redis-py's RedisCluster) fail that slot's commands for a bounded time and
then serve it again without a restart; the dead node is the URL's only seed, so the map must be
read from a node learnt earlier. Each test starts its own cluster (it kills a node): ~2-4 s each."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from cluster_helpers import StoreCluster, running_cluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from sidegate.config.storeurl import parse_cluster_url
from sidegate.store import ClusterStore, LeanStore, RedisPyStore, client, open_store
from sidegate.store.cluster import REFRESH_EVERY_S

KEY = "{tenant-failover}:n"
SLOT = key_slot(KEY.encode())
RECOVERY_BOUND_S = 10.0
"""A failover at a 1 s node timeout takes the cluster ~1-3 s; a client must follow within this."""
PROBE_EVERY_S = 0.05


@dataclass
class Outage:
    """What one client saw after the kill: when its commands first failed and first succeeded again."""

    failures: int = 0
    recovered_after_s: float | None = None
    errors: set[str] = field(default_factory=set)


async def _probe(stores: dict[str, tuple[object, str]], killed_at: float) -> dict[str, Outage]:
    """GET each probe's key through its client every PROBE_EVERY_S until each has succeeded 20
    times in a row after the kill (bounded by RECOVERY_BOUND_S + 5 s in all)."""
    seen = {name: Outage() for name in stores}
    streak = dict.fromkeys(stores, 0)
    deadline = killed_at + RECOVERY_BOUND_S + 5.0
    while time.monotonic() < deadline and min(streak.values()) < 20:
        for name, (store, key) in stores.items():
            if streak[name] >= 20:
                continue
            try:
                got = await store.command("GET", key, timeout_s=0.5)  # type: ignore[attr-defined]
            except Exception as e:  # a failed command: what the request path would see
                seen[name].failures += 1
                # A server's refusal by its first word (CLUSTERDOWN...), else the exception's type.
                seen[name].errors.add(
                    str(e).split(" ")[0] if isinstance(e, ResponseError) else type(e).__name__
                )
                streak[name] = 0
                continue
            assert got == b"v", f"{name} read {got!r}"
            if streak[name] == 0 and seen[name].recovered_after_s is None and seen[name].failures:
                seen[name].recovered_after_s = time.monotonic() - killed_at
            streak[name] += 1
        await asyncio.sleep(PROBE_EVERY_S)
    for name, outage in seen.items():
        assert streak[name] >= 20, f"{name} did not recover within the bound: {outage}"
        if outage.failures:
            assert outage.recovered_after_s is not None
            assert outage.recovered_after_s < RECOVERY_BOUND_S, f"{name}: {outage}"
    return seen


def _write_replicated(c: StoreCluster, primary: int) -> None:
    with c.node(primary) as r:
        r.set(KEY, "v")
        assert r.execute_command("WAIT", 1, 5000) == 1  # the replica has it before the kill


def _key_elsewhere(c: StoreCluster, primary: int) -> str:
    """A key served by another primary than `primary` (written there): its commands must not fail."""
    for i in range(1000):
        key = f"{{other-{i}}}:n"
        owner = c.owner(key_slot(key.encode()), 0)
        if owner != primary:
            with c.node(owner) as r:
                r.set(key, "v")
            return key
    raise AssertionError("no slot of another primary")


def _wait_owner(c: StoreCluster, new_owner: int, asking: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while c.owner(SLOT, asking) != new_owner:
        assert time.monotonic() < deadline, "the cluster did not move the slot"
        time.sleep(0.05)


async def _ride_out(c: StoreCluster, primary: int, after_kill: object) -> dict[str, Outage]:
    """Both clients on a URL whose only seed is `primary`; the primary killed; `after_kill()` (the
    cluster's own recovery step, if any) run; both clients probed until they serve again."""
    url = f"redis+cluster://127.0.0.1:{c.ports[primary]}"
    elsewhere = _key_elsewhere(c, primary)
    lean = open_store(url)
    py = RedisPyStore(client(url))
    assert isinstance(lean, ClusterStore)
    try:
        for store in (lean, py):
            assert await store.command("GET", KEY, timeout_s=2.0) == b"v"
        reads_before = lean.map_reads
        c.kill(primary)
        killed_at = time.monotonic()
        after_kill()  # type: ignore[operator]
        probes = {"lean": (lean, KEY), "redis-py": (py, KEY), "lean, other slots": (lean, elsewhere),
                  "redis-py, other slots": (py, elsewhere)}  # fmt: skip
        seen = await _probe(probes, killed_at)
        # The other slots are served all along, but for the moment the cluster itself refuses every
        # command (CLUSTERDOWN: a primary marked failed and not yet replaced, at the server's
        # default cluster-require-full-coverage yes); never a connection error.
        assert seen["lean, other slots"].errors <= {"CLUSTERDOWN"}, seen
        elapsed = time.monotonic() - killed_at
        # The map is re-read on connection errors, but at most every REFRESH_EVERY_S (no storm).
        assert lean.map_reads - reads_before <= elapsed / REFRESH_EVERY_S + 2
        assert lean.map_reads > reads_before
        return seen
    finally:
        await lean.aclose()
        await py.aclose()
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left after close: {left}"


def test_a_killed_primary_s_replica_takes_over_and_both_clients_follow() -> None:
    with running_cluster(replicas=1, node_timeout_ms=1000) as c:
        primary = c.owner(SLOT, 0)
        replica = c.replica_of(primary)
        _write_replicated(c, primary)
        seen = asyncio.run(_ride_out(c, primary, lambda: None))
        _wait_owner(c, replica, replica)
        print(f"failover outage: {seen}")  # the docs quote these (pytest -s)


def test_a_primary_replaced_at_a_new_address_is_found_without_a_moved() -> None:
    """A new node (an address no slot map has shown) replicates the primary, the primary dies and
    the new node takes its slots over: no node ever answers MOVED for them to the client, which
    finds the new owner only by reading the map again, from a node other than its dead seed."""
    with running_cluster(replicas=0, node_timeout_ms=1000) as c:
        primary = c.owner(SLOT, 0)
        other = (primary + 1) % 3
        new = c.start_node()
        with c.node(new) as r:
            r.execute_command("CLUSTER", "MEET", "127.0.0.1", c.ports[primary])
        deadline = time.monotonic() + 15
        while c.node_id(primary) not in str(c.node(new).execute_command("CLUSTER", "NODES")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with c.node(new) as r:
            r.execute_command("CLUSTER", "REPLICATE", c.node_id(primary))
        _write_replicated(c, primary)

        def take_over() -> None:
            with c.node(new) as r:
                r.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")

        seen = asyncio.run(_ride_out(c, primary, take_over))
        _wait_owner(c, new, other)
        print(f"replacement outage: {seen}")


ACL = ("--user", "sgapp", "on", ">s3cret", "~*", "&*", "+@all")


def test_an_acl_user_in_the_url_authenticates_both_clients() -> None:
    url_user = "redis+cluster://sgapp:s3cret@"
    assert parse_cluster_url(url_user + "127.0.0.1:7000")[1:] == ("sgapp", "s3cret")

    async def go(c: StoreCluster) -> None:
        addrs = ",".join(f"127.0.0.1:{p}" for p in c.ports)
        lean = open_store(url_user + addrs)
        py = RedisPyStore(client(url_user + addrs))
        wrong = open_store("redis+cluster://sgapp:nope@" + addrs)
        try:
            for store in (lean, py):
                assert await store.command("ACL", "WHOAMI", timeout_s=2.0) == b"sgapp"
                for i in range(6):  # keys on every node
                    await store.command("SET", f"{{t{i}}}:k", i, timeout_s=2.0)
                    assert await store.command("GET", f"{{t{i}}}:k", timeout_s=2.0) == str(i).encode()
            # The single-server lean client takes the user from a `redis://` URL the same way.
            one = f"redis://sgapp:s3cret@127.0.0.1:{c.ports[0]}/0"
            single = LeanStore.from_url(one, client(one))
            assert single is not None
            try:
                assert await single.command("ACL", "WHOAMI", timeout_s=2.0) == b"sgapp"
            finally:
                await single.aclose()
            with pytest.raises(ResponseError, match="WRONGPASS"):
                await wrong.command("GET", "{t0}:k", timeout_s=2.0)
            # A refused AUTH leaves no connection behind that would serve as the default user.
            with pytest.raises(ResponseError, match="WRONGPASS"):
                await wrong.command("GET", "{t0}:k", timeout_s=2.0)
        finally:
            for store in (lean, py, wrong):
                await store.aclose()

    with running_cluster(extra_args=ACL) as c:
        asyncio.run(go(c))

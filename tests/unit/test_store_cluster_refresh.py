"""The lean cluster client's map reads after connection errors (sidegate/store/cluster.py): at most
one every REFRESH_EVERY_S however many commands fail, one at a time, and none left pending after
close. The failover itself, on a real cluster: tests/integration/test_store_cluster_failover.py."""

from __future__ import annotations

import asyncio
import itertools

from sidegate.store import ClusterStore, client
from sidegate.store.cluster import REFRESH_EVERY_S


def test_map_reads_after_errors_are_rate_limited_and_none_left_after_close() -> None:
    async def go() -> None:
        store = ClusterStore(client("redis://127.0.0.1:9"), [("127.0.0.1", 9)])
        loop = asyncio.get_running_loop()
        reads: list[float] = []

        async def read_map() -> None:  # stands in for CLUSTER SLOTS on a node
            store._read_at = loop.time()
            reads.append(store._read_at)
            await asyncio.sleep(0.01)

        store._read_map = read_map  # type: ignore[method-assign]
        start = loop.time()
        while loop.time() - start < 1.0:  # a command failing every 5 ms for a second
            store._refresh_soon()
            await asyncio.sleep(0.005)
        # ~200 failures: a read at once, then one per REFRESH_EVERY_S (fewer when the box is slow).
        assert 3 <= len(reads) <= 1.0 / REFRESH_EVERY_S + 2, reads
        gaps = [b - a for a, b in itertools.pairwise(reads)]
        assert min(gaps) >= REFRESH_EVERY_S * 0.9
        store._refresh_soon()  # one read put off, then closed: cancelled, not leaked
        await store.aclose()
        assert store._later is None and store._mapping is None
        await asyncio.sleep(REFRESH_EVERY_S + 0.05)
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(go())

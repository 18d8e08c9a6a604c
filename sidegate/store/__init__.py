"""The store: one client protocol, two clients behind it.

`open_store(url)` gives the process's ONE store object, a :class:`Store`:

- :class:`LeanStore` (lean.py) for a plain `redis://host:port/db` URL: one connection,
  auto-pipelined, hiredis, one watchdog timer for every command's time limit. The request path's
  commands cost a fraction of redis-py's;
- :class:`RedisPyStore` (redispy.py) for anything else the lean client does not take
  (`rediss://`, `unix://`, sentinel, query options): redis-py's pool under the same methods.

What the request path uses is the protocol (protocol.py): `command` (a time limit, and `lazy` for
writes no request waits for), `commands` (a batch in one round trip: the ledger), `run_script`
(EVALSHA with a reload on NOSCRIPT: the quota scripts), `send_now` (the cache's prefetch; None on
redis-py), `aclose`. The quota store, the response cache and the ledger take a `Store` and nothing
else, so none of them knows or tests which client it has.

Two members of the protocol are not commands, and are named for what they are:

- `store.redis`: the redis-py client on the same store, for the richer API that is never on the
  request path (SCAN, pub/sub, pipelines, WATCH). The tenants watcher, the key cache (inline auth)
  and the cache index's loader take it explicitly as a `Redis` (their feature hands them `store.redis`);
  the processes that need only that API (authz's key cache, the admin API and control plane, the
  ledger reader and its CLI, the supervisor) build only that, with :func:`client`.
- `store.tracked`: the one connection whose `CLIENT TRACKING` survives reconnects, which the
  cache's key index (features/cache/known.py) needs; None on redis-py (a pool has no single
  connection), so the index is simply not built there.

cluster.py: a Redis/Valkey Cluster (`redis+cluster://host:port`): one lean connection per node,
the slot map, MOVED/ASK, a clear error for a cross-slot command; redis-py's RedisCluster as `.redis`.

valkey.py starts the embedded Valkey; free ports live in sidegate/ports.py.
"""

from __future__ import annotations

from redis.asyncio import Redis

from sidegate.config.storeurl import is_cluster_url
from sidegate.store.cluster import ClusterStore, CrossSlotError
from sidegate.store.lean import LeanStore
from sidegate.store.protocol import Store, TrackedConnection
from sidegate.store.redispy import RedisPyStore, client
from sidegate.store.script import LuaScript

__all__ = ["ClusterStore", "CrossSlotError", "LeanStore", "LuaScript", "RedisPyStore", "Store", "TrackedConnection", "client", "open_store"]


def open_store(url: str, socket_timeout_s: float = 1.0) -> Store:
    """The store client for `url`: the lean one when it takes the URL, else redis-py's. Either way
    `.redis` is redis-py's pooled client for the same URL. A `redis+cluster://` URL: the cluster
    clients (cluster.py), chosen here once so the single-server path has no cluster branch."""
    redis: Redis = client(url, socket_timeout_s)
    if is_cluster_url(url):
        return ClusterStore.from_url(url, redis, socket_timeout_s)
    return LeanStore.from_url(url, redis, socket_timeout_s) or RedisPyStore(redis)

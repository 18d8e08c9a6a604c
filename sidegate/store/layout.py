"""The config plane's keys share one hash tag, `{sg}`, so that on a store cluster they all sit in
one slot: their MULTI/EXEC transactions and WATCHes (a key change with its version bump and audit
entry, a routing commit) need every key on one node. They are few and small, and read through their
version counters, so one node holds them easily (docs/deployment.md, "A store cluster").

The request path's keys are spread instead: the quota's by tenant (`{quota:<tenant>}`), cache
entries by their own names, the ledger stream with its writers hash (`{sg:ledger}:writers`).

Stores written before the tag (`sg:keys`, `sg:key:<id>`, ...) are renamed once by
:func:`migrate_layout` (`sidegate up` and the xDS follower run it before they seed).
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

CONFIG_PREFIX = "{sg}:"
"""The prefix of every config-plane key: keys, tenants, teams, users, routing, admin tokens, audit."""

_OLD_NAMES = (
    "sg:keys", "sg:keys:version", "sg:tenants", "sg:config:version", "sg:routing:version",
    "sg:routing:history", "sg:routing:seeded", "sg:admintokens", "sg:audit",
)  # fmt: skip
_OLD_PATTERNS = (
    "sg:key:*", "sg:tenant:*", "sg:teams:*", "sg:team:*", "sg:users:*", "sg:user:*",
    "sg:routing:doc:*", "sg:admintoken:*",
)  # fmt: skip

log = logging.getLogger("sidegate.store")


def queue_publish(pipe: Pipeline, channel: str, message: bytes | str) -> None:
    """PUBLISH queued in a MULTI with the change it announces. Through `execute_command`: redis-py's
    cluster pipeline refuses its `publish` method, and counts the channel's slot like a key's (so
    the config plane's channels carry the `{sg}` tag too)."""
    pipe.execute_command("PUBLISH", channel, message)


async def migrate_layout(redis: Redis) -> int:
    """Rename config-plane keys of the layout before the `{sg}` tag (`sg:...` -> `{sg}:...`); a
    key already under its new name is kept (RENAMENX). Returns how many were renamed. A store
    cluster is skipped: the old layout never worked there (its transactions were cross-slot)."""
    if isinstance(redis, RedisCluster):
        return 0
    names: list[str] = list(_OLD_NAMES)
    for pattern in _OLD_PATTERNS:
        async for k in redis.scan_iter(match=pattern, count=1000):
            names.append(k.decode() if isinstance(k, bytes) else str(k))
    moved = 0
    for name in names:
        try:
            moved += int(await redis.renamenx(name, CONFIG_PREFIX + name.removeprefix("sg:")))
        except ResponseError:  # no such key
            continue
    if moved:
        log.info("store layout: %d config keys renamed under the {sg} hash tag", moved)
    return moved

"""The config plane's keys share one hash tag, `{sg}`, so that on a store cluster they all sit in
one slot: their MULTI/EXEC transactions and WATCHes (a key change with its version bump and audit
entry, a routing commit) need every key on one node. They are few and small, and read through their
version counters, so one node holds them easily (docs/deployment.md, "A store cluster").

The request path's keys are spread instead: the quota's by tenant (`{quota:<tenant>}`), cache
entries by their own names, the ledger stream with its writers hash (`{sg:ledger}:writers`).

Stores written before the tag (`sg:keys`, `sg:key:<id>`, ...) are copied once by
:func:`migrate_layout`, which every process reading the config plane runs at its start.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import secrets

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


MIGRATED = CONFIG_PREFIX + "layout"
"""Set once a store's old-layout keys were copied: every later start skips the scan."""
_LAYOUT = b"2"
_SETS = frozenset({"set"})
LOCK = CONFIG_PREFIX + "layout:lock"
"""Held by the one process copying; the others wait for the marker (every process of a stack starts
at once, and two copies interleaved with a live change could bring back a key deleted in between)."""
LOCK_TTL_MS = 60_000
"""How long a copier that died keeps the others waiting; far more than a copy takes (a SCAN of the
keyspace and a COPY per config key)."""
_POLL_S = 0.05
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


async def migrate_layout(redis: Redis, ledger_stream: str = "sg:ledger") -> int:
    """Copy config-plane keys of the layout before the `{sg}` tag (`sg:...` -> `{sg}:...`) and the
    ledger's writers hash; returns how many keys were copied.

    Copied, not renamed: during a rolling upgrade the old version's processes keep reading the old
    names (a rename would empty their key set and refuse every tenant key); the old keys can be
    deleted once no old process is left (docs/deployment.md, "A store cluster"). Sets are merged
    (a new process may have seeded before this ran), other keys are copied unless the new name
    exists; a marker key makes later starts a single GET. Every process that reads the config
    plane runs it first (`sidegate up`, the xDS follower, the key cache of extproc and authz, the
    admin API and CLI): one of them copies under a lock, the others wait for its marker. A store
    cluster is skipped: the old layout never worked there."""
    if isinstance(redis, RedisCluster) or await redis.get(MIGRATED) == _LAYOUT:
        return 0
    token = secrets.token_hex(8)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * LOCK_TTL_MS / 1000
    while not await redis.set(LOCK, token, nx=True, px=LOCK_TTL_MS):
        await asyncio.sleep(_POLL_S)  # another process copies: its marker, or its lock expiring
        if await redis.get(MIGRATED) == _LAYOUT:
            return 0
        if loop.time() > deadline:
            raise TimeoutError(f"store layout: {LOCK} held for too long by another process")
    try:
        if await redis.get(MIGRATED) == _LAYOUT:  # finished between our first GET and the lock
            return 0
        copied = await _copy_all(redis, ledger_stream)
        await redis.set(MIGRATED, _LAYOUT)
    finally:
        await redis.eval(_UNLOCK, 1, LOCK, token)  # ours only (an expired lock may be another's)
    if copied:
        log.info("store layout: %d config keys copied under the {sg} hash tag", copied)
    return copied


async def _copy_all(redis: Redis, ledger_stream: str) -> int:
    names: list[str] = list(_OLD_NAMES)
    async for k in redis.scan_iter(match="sg:*", count=1000):  # one pass over the keyspace
        name = k.decode() if isinstance(k, bytes) else str(k)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in _OLD_PATTERNS):
            names.append(name)
    copied = 0
    for name in names:
        kind = await redis.type(name)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind == "none":
            continue
        new = CONFIG_PREFIX + name.removeprefix("sg:")
        if kind in _SETS:
            await redis.sunionstore(new, [new, name])
            copied += 1
        else:
            copied += await _copy(redis, name, new)
    await _merge_writers(redis, f"{ledger_stream}:writers", f"{{{ledger_stream}}}:writers")
    return copied


async def _copy(redis: Redis, src: str, dst: str) -> int:
    """COPY (Redis 6.2+, Valkey); DUMP/RESTORE where the store lacks it. 0 if `dst` exists."""
    try:
        return int(await redis.execute_command("COPY", src, dst))
    except ResponseError as exc:
        if "unknown command" not in str(exc).lower():
            raise
    dumped = await redis.dump(src)
    if dumped is None:
        return 0
    try:
        await redis.restore(dst, max(await redis.pttl(src), 0), dumped)
    except ResponseError as exc:  # BUSYKEY: the new name exists
        if "busykey" not in str(exc).lower():
            raise
        return 0
    return 1


async def _merge_writers(redis: Redis, old: str, new: str) -> None:
    """The ledger's last applied batch per writer, under its new name (the higher number wins), so
    a batch spilled before the upgrade and replayed after it is still applied only once."""
    for writer, number in (await redis.hgetall(old)).items():
        current = await redis.hget(new, writer)
        if current is None or int(current) < int(number):
            await redis.hset(new, writer, number)

"""The tenant keys, held in memory and reloaded when the store's version counters move.

The records held are the keys as requests see them (:meth:`sidegate.orgstore.Org.resolve`): a user
key's team filled in from the user, and the allow-list already key ∩ team ∩ user, so the decision
per request stays one dict lookup. Teams and users change ``sg:config:version``, keys
``sg:keys:version``: either moving reloads both.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from sidegate import keystore, metrics, orgstore
from sidegate.keystore import KeyRecord
from sidegate.orgstore import Org
from sidegate.store.layout import migrate_layout

log = logging.getLogger("sidegate.authz")


class KeyCache:
    """Local copy of the key records, reloaded when the store's version counter moves.

    A store outage keeps the last records for `max_stale_s` (auth stays up); after that every key
    is refused until the store answers again (fail closed: a revoked key must not live forever).
    """

    def __init__(self, redis: Redis, poll_s: float = 0.25, max_stale_s: float = 300.0):
        self.redis = redis
        self.poll_s = poll_s
        self.max_stale_s = max_stale_s
        self.records: dict[str, KeyRecord] = {}
        self.org = Org()
        """Teams and users of the last load: JWT callers' allow-lists come from here too."""
        self.version: tuple[int, int] | int = -1
        self.fresh_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    async def refresh(self) -> None:
        pipe = self.redis.pipeline(transaction=False)  # one round trip, no cross-slot MGET
        pipe.get(keystore.VERSION)
        pipe.get(keystore.CONFIG_VERSION)
        keys_v, config_v = await pipe.execute()
        version = (int(keys_v or 0), int(config_v or 0))
        if version != self.version:
            _, records = await keystore.load_all(self.redis)
            org = await orgstore.load_org(self.redis)
            self.records = org.resolve_all(records)
            self.org, self.version = org, version
        self.fresh_at = time.monotonic()
        if self._warned:
            log.warning("key store reachable again")
            self._warned = False

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # store down: serve from cache for a bounded time
                metrics.store_error("authz", "keys")
                if not self._warned:
                    log.warning("key store unreachable (%s); serving cached keys", type(exc).__name__)
                    self._warned = True
                if time.monotonic() - self.fresh_at > self.max_stale_s and self.records:
                    log.error("key cache older than %.0fs: refusing all keys until the store is back", self.max_stale_s)
                    self.records = {}
                    self.version = -1
            await asyncio.sleep(self.poll_s)

    async def start(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await migrate_layout(self.redis)  # a store written before the config keys' {sg} tag
                await self.refresh()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

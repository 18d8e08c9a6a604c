"""The tenant keys, held in memory and reloaded when the store's version counter moves."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from sidegate import keystore, metrics
from sidegate.keystore import KeyRecord

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
        self.version = -1
        self.fresh_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    async def refresh(self) -> None:
        version = int(await self.redis.get(keystore.VERSION) or 0)
        if version != self.version:
            self.version, self.records = await keystore.load_all(self.redis)
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

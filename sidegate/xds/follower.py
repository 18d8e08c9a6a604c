"""The xDS server's source: the effective configuration = the config file's, with the store's
current routing document in place (config/routing.py `with_routing`), followed every
`routingstore.POLL_S` (and at once when the change channel says so).

A document that fails validation is never served (logged; the last good one stays). The config
file is checked every second: when it changed, its routing document is seeded into the store
(`routingstore.seed_file`: a new version when its digest differs from the one last seeded), which
is how a Kubernetes ConfigMap change applies without a pod roll; the rest of the file (listener,
services...) is this process's shape and applies at its next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from sidegate import routingstore
from sidegate.config import ConfigError, SidegateConfig
from sidegate.config.routing import with_routing
from sidegate.store.layout import migrate_layout
from sidegate.xds.resources import Snapshot, snapshot
from sidegate.xds.server import AdsServer

log = logging.getLogger("sidegate.xds")

FILE_CHECK_S = 1.0


class Follower:
    def __init__(self, base: SidegateConfig, cfg_path: Path, redis: Redis, server: AdsServer,
                 load: Callable[[Path], SidegateConfig]) -> None:  # fmt: skip
        self.base, self.cfg_path, self.redis, self.server, self.load = base, cfg_path, redis, server, load
        self.seen = -1
        self.file_stamp = self._stamp()
        self.last_file_check = time.monotonic()
        self.good: int | None = None
        """The routing document version being served (None: the file's, before the store had one)."""

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.cfg_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    async def start(self) -> None:
        """Seed the file's document (if the store needs it) and serve the store's current one; the
        file's own when the store cannot be read (Envoy must start either way)."""
        try:
            await migrate_layout(self.redis)  # a store written before the config keys' {sg} tag
            await routingstore.seed_file(self.redis, self.base, path=str(self.cfg_path))
            await self.poll()
        except Exception as exc:
            log.warning("routing document: store not readable at start (%s); serving the config file's", exc)
        if self.server.target is None:
            self.server.set_target(snapshot(self.base, 0))

    async def run(self) -> None:
        changed = asyncio.Event()
        listener = asyncio.create_task(self._listen(changed))
        failing = False
        try:
            while True:
                try:
                    await self.poll()
                    if time.monotonic() - self.last_file_check >= FILE_CHECK_S:
                        await self.check_file()
                    if failing:
                        failing = False
                        log.info("routing document: the store answers again")
                except Exception as exc:  # a store hiccup: keep serving, try again (logged once per outage)
                    if not failing:
                        log.error("routing document: following the store failed (%s: %s); retrying every %gs",
                                  type(exc).__name__, exc, routingstore.POLL_S)  # fmt: skip
                    failing = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), routingstore.POLL_S)
                changed.clear()
        finally:
            listener.cancel()

    async def _listen(self, changed: asyncio.Event) -> None:
        """The change channel wakes the poll at once (the poll alone bounds the delay either way)."""
        while True:
            try:
                async with self.redis.pubsub() as ps:
                    await ps.subscribe(routingstore.CHANNEL)
                    while True:  # (get_message's own timeout: an idle channel is no error)
                        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if msg is not None:
                            changed.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # the poll goes on; subscribe again shortly
                await asyncio.sleep(1.0)

    async def poll(self) -> Snapshot | None:
        """One look at the store's version; a new valid document becomes the target snapshot."""
        n = await routingstore.version(self.redis)
        if n == self.seen:
            return None
        cur = await routingstore.current(self.redis)
        if cur is None:
            return None
        self.seen = cur.number
        try:
            cfg = with_routing(self.base, cur.doc, source=f"routing document version {cur.number}")
        except ConfigError as exc:
            log.error("routing document version %d is invalid, not served (still serving %s): %s",
                      cur.number, self.good, "; ".join(exc.problems))  # fmt: skip
            return None
        try:
            snap = snapshot(cfg, cur.number)
        except Exception:
            log.exception("routing document version %d: rendering failed, not served", cur.number)
            return None
        self.good = cur.number
        if self.server.set_target(snap):
            log.info("routing document version %d: serving it to Envoy", cur.number)
        return snap

    async def check_file(self) -> None:
        self.last_file_check = time.monotonic()
        stamp = self._stamp()
        if stamp == self.file_stamp:
            return
        try:
            cfg = self.load(self.cfg_path)
        except (ConfigError, OSError) as exc:
            self.file_stamp = stamp
            log.error("config file %s changed but does not load (%s): nothing seeded", self.cfg_path, exc)
            return
        version = await routingstore.seed_file(self.redis, cfg, path=str(self.cfg_path))
        self.file_stamp = stamp  # (only now: a store that failed the seed gets it at the next check)
        if version is not None:
            log.info("config file %s changed: its routing document is version %d", self.cfg_path, version)

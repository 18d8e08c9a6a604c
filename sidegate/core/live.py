"""Live routing in one process: the routing document's versions as whole configurations, followed
from the store (sidegate/routingstore.py), and the one rule every request follows to pick one.

:class:`Versions` holds the latest configuration and the last few before it (`KEEP`). The request
path only reads it: :meth:`Versions.pick` is one dict lookup. :class:`Follower` moves it: it polls
the store's version number (one GET every ``routingstore.POLL_S``), loads a new document, validates
it inside the file's configuration (``with_routing``; a document that fails is logged and skipped,
the running configuration untouched) and tells the listeners (the app: features and the per-try
stage, each through its ``reconfigure(cfg)`` hook).

The per-request rule (docs/architecture.md, "Live routing"): Envoy's route configuration for
version N sets ``x-sidegate-config-version: N`` on the request; the gateway routes with version N's
models. Newer than loaded: loaded now (awaited; concurrent requests share one load). Older: its
kept copy (evicted: the oldest kept, logged). No header (static bootstrap): the latest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from sidegate import routingstore
from sidegate.config import SidegateConfig
from sidegate.config.root import ConfigError
from sidegate.config.routing import with_routing
from sidegate.tasks import cancel_and_wait

log = logging.getLogger("sidegate.live")

KEEP = 8
"""Configurations kept besides the latest's: a request routed by an older Envoy route table (or a
retry of an in-flight request) still finds its version."""
LOAD_TIMEOUT_S = 2.0
"""Bound of one on-demand load (a request waiting for its version, a try meeting a new provider)."""

ROUTING_VERSION_KEY = "rv"
"""The request metadata key holding the routing version the gateway routed it with (set only when
Envoy named one): the per-try stage and the lanes look its models and providers up in it."""

Listener = Callable[[SidegateConfig], None]


class Versions:
    """The kept configurations by version number, and the latest. Version 0: the file's own (the
    store has none yet, or there is no store)."""

    def __init__(self, cfg: SidegateConfig, version: int = 0):
        self.latest = cfg
        self.version = version
        self.configs: dict[int, SidegateConfig] = {version: cfg}
        self.listeners: list[Listener] = []
        self.loader: Callable[[int], Any] | None = None
        """`async (n) -> None`: loads version n (or the current one, n = 0) into this object; the
        follower's. None: nothing to load from (no store)."""
        self._loading: dict[int, asyncio.Future[None]] = {}
        self._failing = False

    def pick(self, version: int) -> SidegateConfig | None:
        """The configuration of `version`: kept, or the oldest kept when it is older than that
        (evicted), or None when it is newer than the latest (the caller awaits :meth:`load`)."""
        cfg = self.configs.get(version)
        if cfg is not None:
            return cfg
        oldest = min(self.configs)
        if version > oldest:  # newer than the latest, or one this process skipped (two changes
            return None  # within a poll): Envoy's routes may be at it, so it is loaded, not guessed
        log.warning("routing version %d is no longer kept: using version %d", version, oldest)
        return self.configs[oldest]

    async def config_of(self, version: int) -> SidegateConfig:
        """:meth:`pick`, loading a newer version first (a failed load: the latest, logged)."""
        cfg = self.pick(version)
        if cfg is None:
            await self.load(version)
            cfg = self.pick(version)
            if cfg is None:
                log.warning("routing version %d could not be loaded: using version %d", version, self.version)
                return self.latest
        return cfg

    async def load(self, version: int = 0) -> None:
        """Load `version` (0: the store's current one) now; concurrent callers share one load."""
        if self.loader is None:
            return
        pending = self._loading.get(version)
        if pending is None:
            pending = asyncio.ensure_future(self._load(version))
            self._loading[version] = pending
        await asyncio.shield(pending)

    async def _load(self, version: int) -> None:
        assert self.loader is not None
        try:
            await asyncio.wait_for(self.loader(version), LOAD_TIMEOUT_S)
            if self._failing:
                self._failing = False
                log.info("routing: the store answers again")
        except Exception as exc:  # the request goes on with what is kept; the poll catches up
            # once per outage: the poll retries every POLL_S in every process
            (log.debug if self._failing else log.warning)("routing: loading version %s failed: %s", version or "current", exc)
            self._failing = True
        finally:
            self._loading.pop(version, None)

    def missing(self, version: int) -> bool:
        """Whether `version` must be loaded before a request routed with it runs (see :meth:`pick`)."""
        return version not in self.configs and version > min(self.configs)

    def keep(self, version: int, cfg: SidegateConfig) -> None:
        """An older version this process skipped, loaded for a request routed with it: kept beside
        the others (the latest and the listeners unchanged)."""
        if version in self.configs or version >= self.version or version < min(self.configs):
            return
        self.configs[version] = cfg
        while len(self.configs) > KEEP + 1:
            del self.configs[min(self.configs)]

    def knows_provider(self, name: str) -> bool:
        return any(name in cfg.providers for cfg in self.configs.values())

    def newest_first(self) -> list[SidegateConfig]:
        return [self.configs[n] for n in sorted(self.configs, reverse=True)]

    def put(self, version: int, cfg: SidegateConfig) -> None:
        """A newer version: kept, made the latest, the listeners told (in order, synchronously, so
        no request sees the new latest before the features know it)."""
        if version <= self.version:
            return
        self.configs[version] = cfg
        while len(self.configs) > KEEP + 1:
            del self.configs[min(self.configs)]
        self.latest, self.version = cfg, version
        for listener in self.listeners:
            try:
                listener(cfg)
            except Exception:
                log.exception("routing version %d: a listener failed", version)
        log.info("routing version %d in use", version)


class Follower:
    """Follows the store's routing versions into a :class:`Versions` (polling; loads on demand)."""

    def __init__(
        self, redis: Redis, file_cfg: SidegateConfig, versions: Versions, poll_s: float = routingstore.POLL_S
    ):
        self.redis = redis
        self.file_cfg = file_cfg
        self.versions = versions
        self.poll_s = poll_s
        self.refused: set[int] = set()
        """Versions whose document failed validation (logged once, never retried)."""
        self._task: asyncio.Task[None] | None = None
        versions.loader = self.load

    async def load(self, version: int = 0) -> None:
        """Version `version` (0: the current one) from the store into the kept versions. A version
        older than the latest is loaded only when this process skipped it (:meth:`Versions.keep`)."""
        if version and version < self.versions.version:
            if self.versions.missing(version) and version not in self.refused:
                cfg = await self._config_at(version)
                if cfg is not None:
                    self.versions.keep(version, cfg)
            return
        current = await routingstore.version(self.redis)
        target = current if version == 0 else min(version, current)
        if target <= self.versions.version or target in self.refused:
            return
        cfg = await self._config_at(target)
        if cfg is not None:
            self.versions.put(target, cfg)

    async def _config_at(self, n: int) -> SidegateConfig | None:
        doc = await routingstore.doc_at(self.redis, n)
        if doc is None:
            return None
        try:
            return with_routing(self.file_cfg, doc, source=f"routing version {n}")
        except ConfigError as exc:
            self.refused.add(n)
            log.error("routing version %d is invalid, ignored: %s", n, "; ".join(exc.problems))
            return None

    async def start(self) -> None:
        """The store's current version before serving (bounded), then the poll in the background."""
        try:
            await asyncio.wait_for(self.load(), LOAD_TIMEOUT_S)
        except Exception as exc:
            log.warning("routing: the store's version could not be read at start (%s); following it", exc)
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.versions.load()
            except Exception:  # never ends the loop
                log.exception("routing: poll failed")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

"""The gateway as one process runs it: an ordered list of features, the pipeline that runs their
request hooks, and the per-try stage that runs every provider try and reports it to their
completion hooks. The adapters (extproc/) serve it over gRPC, HTTP and the access log.

Gateway (once per request):  auth -> parse -> route -> responses_store -> guard -> quota -> cache -> lane
TryStage (once per try):     per-try hooks -> translate -> credentials -> (response) translate ->
                             per-try hooks -> scrub -> completion hooks (and the cache's fill)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sidegate.config import SidegateConfig
from sidegate.core.completion import CompletionHook
from sidegate.core.feature import Feature, Fillers, close_each, collect
from sidegate.core.live import Follower, Versions
from sidegate.core.pipeline import Gateway
from sidegate.core.tries import TryStage
from sidegate.features.auth.feature import AuthFeature
from sidegate.features.cache.feature import CacheFeature
from sidegate.features.guard.feature import GuardFeature
from sidegate.features.lane import LaneFeature
from sidegate.features.ledger.feature import LedgerFeature
from sidegate.features.metrics import MetricsFeature
from sidegate.features.models import ModelsFeature
from sidegate.features.parse import ParseFeature
from sidegate.features.quota.count_tokens import CountTokensFeature
from sidegate.features.quota.feature import QuotaFeature
from sidegate.features.responses_store.feature import ResponsesStoreFeature
from sidegate.features.route.feature import RouteFeature
from sidegate.features.tracing.feature import TracingFeature
from sidegate.store import Store

log = logging.getLogger("sidegate.extproc")


def default_features(cfg: SidegateConfig, store: Store | None = None) -> list[Feature]:
    """THE features, in order: request hooks run in this order, completion hooks too, start in this
    order, close in reverse. Each feature decides from the config whether it is on (None: off).
    `store`: the process's store client (sidegate/store/); without one, the features that keep
    state there are off."""
    features = (
        AuthFeature.from_config(cfg, store),
        ModelsFeature(cfg),
        ParseFeature.from_config(cfg),
        RouteFeature(cfg, store=store),
        CountTokensFeature(cfg),
        ResponsesStoreFeature.from_config(cfg, store),
        GuardFeature(cfg),
        QuotaFeature.from_config(cfg, store),
        CacheFeature.from_config(cfg, store),
        LaneFeature(cfg),
        MetricsFeature(cfg),
        LedgerFeature.from_config(cfg, store),
        # Last: its try hook sees the body the guard redacted and the answer it restored; the
        # gateway asks it (`trace`) before any request hook, whatever its place here.
        TracingFeature.from_config(cfg),
    )
    return [f for f in features if f is not None]


class App:
    """Everything one extproc process runs, from any ordered list of features."""

    def __init__(self, cfg: SidegateConfig, features: Sequence[Feature], store: Store | None = None):
        self.cfg = cfg
        self.features = list(features)
        hooks = collect(self.features)
        self.gateway = Gateway(hooks=hooks)
        self.completion_hooks: list[CompletionHook] = hooks.on_complete
        """Every completion hook, for every lane (the per-try stage, the try lane, the access log)."""
        self.tries = TryStage(cfg, self.completion_hooks, Fillers(hooks.fills) if hooks.fills else None, hooks.on_try)
        self._starts = hooks.starts
        self._closes = hooks.closes
        # Live routing: the routing versions this process knows, told to every feature that derives
        # something from them and to the per-try stage (sidegate/core/live.py).
        self.versions = Versions(cfg)
        self.versions.listeners.append(self.reconfigure)
        self._reconfigures = hooks.reconfigures
        # The request's version header is Envoy's only when xDS serves the routes (the route table
        # overwrites a client's); a static bootstrap passes a client's on, so it is not read then.
        self.gateway.versions = self.versions if cfg.services.xds else None
        self.tries.versions = self.versions
        self.follower: Follower | None = Follower(redis, cfg, self.versions) if (redis := getattr(store, "redis", None)) is not None else None
        """Follows the store's routing versions (None without a store: the file's config only)."""

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A new routing version: the per-try stage first (a new provider's credential is there
        before a route can name it), then each feature's `reconfigure` hook in list order."""
        self.cfg = cfg
        self.tries.reconfigure(cfg)
        for reconfigure in self._reconfigures:
            reconfigure(cfg)

    async def start(self) -> None:
        """Before serving, on the serving event loop (features may create tasks)."""
        await self.tries.start()
        for start in self._starts:
            await start()
        if self.follower is not None:  # the store's current version before the first request
            await self.follower.start()

    async def aclose(self) -> None:
        follower = self.follower
        await close_each(*([follower.close] if follower is not None else []), *reversed(self._closes), self.tries.close)


def build(cfg: SidegateConfig, store: Store | None = None) -> App:
    """The app of the config: :func:`default_features` (background work starts in :meth:`App.start`)."""
    return App(cfg, default_features(cfg, store), store)

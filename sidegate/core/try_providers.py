"""The per-try stage's providers: each one's credential, header allow-list and the secrets to scrub,
kept in step with the routing versions this process knows (sidegate/core/live.py): a new or changed
provider gets new state, a removed one stays while a kept version names it (an in-flight try or a
retry of an older version may still reach it) and is closed only after the longest try could end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sidegate.config import ProviderConfig, SidegateConfig
from sidegate.core.live import ROUTING_VERSION_KEY, Versions
from sidegate.credentials import Credential, RefreshingCredential, SigningCredential, for_provider
from sidegate.headers import Allowed, request_allowed
from sidegate.wire import provider_of_cluster

log = logging.getLogger("sidegate.upstream")


def _routes(cfg: SidegateConfig, model: str, provider: str) -> bool:
    """`cfg`'s chain of `model` names `provider` (a provider that left the chain but is still
    configured is no answer: the try needs its route, e.g. its provider-side model)."""
    m = cfg.models.get(model)
    return m is not None and provider in cfg.providers and any(r.provider == provider for r in m.routes)


class TryProviders:
    """The providers' state every try of this process shares, by provider name."""

    def __init__(self, cfg: SidegateConfig):
        self.cfg = cfg
        self.versions: Versions | None = None
        """The process's kept routing versions (live routing): a try routed with an older version
        finds its model and provider there; None: this config only."""
        self.credentials: dict[str, Credential] = {}
        self.signers: dict[str, SigningCredential] = {}
        """The providers whose every try is signed over its final body (`sign`, after translation)."""
        self.allowed: dict[str, Allowed] = {}
        self.provider_cfgs: dict[str, ProviderConfig] = {}
        """The provider settings each credential and allow-list was built from."""
        self.retired: list[Credential] = []
        """Credentials replaced or removed by a routing change: their secrets are still scrubbed,
        and a refreshing one is closed only after the longest try could have used it."""
        self._tasks: set[asyncio.Task[None]] = set()
        for name, p in cfg.providers.items():
            self._add(name, p)
        self.secret_strs: tuple[str, ...] = ()
        self.secrets: tuple[bytes, ...] = ()
        self.refresh_secrets()

    def _add(self, name: str, p: ProviderConfig) -> Credential:
        if (p.api_key_env or p.api_key_envs) and not p.api_keys():
            log.warning("provider %s: its key environment variable(s) are not set", name)
        credential = self.credentials[name] = for_provider(p, name)
        self.signers.pop(name, None)
        if isinstance(credential, SigningCredential):
            self.signers[name] = credential
        self.allowed[name] = Allowed(request_allowed(p))
        self.provider_cfgs[name] = p
        return credential

    def config_for(self, meta: dict[str, Any], provider: str, model: str) -> SidegateConfig | None:
        """The configuration a try of `model` on `provider` runs with: the routing version its
        request was routed with (metadata), else the latest; a version that does not name both
        (a try that outlived a change) finds the newest kept one that does."""
        cfg = self.cfg
        versions = self.versions
        if versions is not None:
            named = meta.get(ROUTING_VERSION_KEY)
            if named is not None:
                cfg = versions.pick(int(named)) or cfg
        if _routes(cfg, model, provider):
            return cfg
        if versions is not None:
            for kept in versions.newest_first():
                if _routes(kept, model, provider):
                    return kept
        return None

    def ready(self, meta: dict[str, Any], cluster: str) -> bool:
        """This process knows the provider a try's cluster names and the routing version its
        request was routed with (else: :meth:`learn` first). Two dict lookups."""
        versions = self.versions
        if versions is None:
            return True
        provider = provider_of_cluster(cluster)
        if provider is not None and provider not in self.credentials:
            return False  # (a cluster that names no provider, e.g. a direct-lane entry Envoy answered
            # without an upstream: nothing to learn, no store read per such entry)
        named = meta.get(ROUTING_VERSION_KEY)
        return named is None or not versions.missing(int(named))

    async def learn(self, meta: dict[str, Any]) -> None:
        """A try met a provider or a routing version this process does not know yet (another
        process routed it, or Envoy learnt a change first; contract 2: a change always reaches
        the store before Envoy): load the version its request names, else the store's current."""
        if self.versions is not None:
            named = meta.get(ROUTING_VERSION_KEY)
            await self.versions.load(int(named) if named is not None and self.versions.missing(int(named)) else 0)

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A new routing version: rebuild the state of each provider that is new or changed;
        a provider no kept version names any more is retired (never while a try may use it)."""
        self.cfg = cfg
        for name, p in cfg.providers.items():
            if self.provider_cfgs.get(name) != p:
                old = self.credentials.get(name)
                credential = self._add(name, p)
                if old is not None:
                    self._retire(old)
                if isinstance(credential, RefreshingCredential):
                    self._spawn(credential.start(self.refresh_secrets))
        versions = self.versions
        for name in [n for n in self.credentials if n not in cfg.providers]:
            if versions is not None and versions.knows_provider(name):
                continue  # an in-flight try or a retry of an older version may still reach it
            self._retire(self.credentials.pop(name))
            self.signers.pop(name, None)
            self.allowed.pop(name, None)
            self.provider_cfgs.pop(name, None)
        self.refresh_secrets()

    def _retire(self, credential: Credential) -> None:
        self.retired.append(credential)
        longest = max((m.per_try_timeout_s or 300.0 for m in self.cfg.models.values()), default=300.0)

        async def later() -> None:
            await asyncio.sleep(longest + 30.0)
            if isinstance(credential, RefreshingCredential):
                await credential.close()
            self.retired.remove(credential)
            self.refresh_secrets()

        self._spawn(later())

    def _spawn(self, work: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no event loop (pure unit tests): nothing runs in the background
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refresh_secrets(self) -> None:
        """Every provider secret, to scrub from what reaches a client or the cache; called again by
        a credential whose secret changed (a refreshed token, rotated keys)."""
        credentials = [*self.credentials.values(), *self.retired]
        self.secret_strs = tuple({s for credential in credentials for s in credential.secrets})
        self.secrets = tuple(k.encode() for k in self.secret_strs)

    async def start(self) -> None:
        """Starts the credentials that refresh in the background (cloud tokens, the AWS chain): each
        has its first secret, or has logged why not, before the first request. All at once: each
        first fetch is bounded, but several slow ones (an unreachable metadata server) would add up."""
        refreshing = [c for c in self.credentials.values() if isinstance(c, RefreshingCredential)]
        await asyncio.gather(*(c.start(self.refresh_secrets) for c in refreshing))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for credential in [*self.credentials.values(), *self.retired]:
            if isinstance(credential, RefreshingCredential):
                await credential.close()

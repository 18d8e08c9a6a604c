"""Live tenant limits: the store's `sg:tenant:<name>` hashes (set by the control plane, seeded from
the YAML at start), cached in-process and reloaded when `sg:config:version` moves (polled)."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from sidegate import keystore
from sidegate.config import SidegateConfig
from sidegate.features.quota import Limits, TenantQuota
from sidegate.keystore import TenantLimits

log = logging.getLogger("sidegate.tenants")


def _limits(t: TenantLimits) -> Limits:
    return Limits(rpm=t.rpm, tpm=t.tpm, daily_usd=t.daily_usd, monthly_usd=t.monthly_usd)


class TenantQuotas:
    """{tenant: TenantQuota}: limits from the store, per-key/per-model overrides from the config."""

    def __init__(self, cfg: SidegateConfig, redis: Redis, poll_s: float = 0.25):
        self.cfg = cfg
        self.redis = redis
        self.poll_s = poll_s
        self.version = -1
        self.quotas: dict[str, TenantQuota] = {name: t.quota for name, t in cfg.tenants.items()}
        self._warned = False

    def get(self, tenant: str) -> TenantQuota | None:
        return self.quotas.get(tenant)

    async def refresh(self) -> None:
        version = int(await self.redis.get(keystore.CONFIG_VERSION) or 0)
        if version == self.version:
            return
        version, limits = await keystore.load_tenants(self.redis)
        quotas = {name: t.quota for name, t in self.cfg.tenants.items()}
        for name, lim in limits.items():
            base = quotas.get(name, TenantQuota())
            quotas[name] = base.model_copy(update={"limits": _limits(lim)})
        self.quotas, self.version = quotas, version

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
                self._warned = False
            except Exception as exc:
                if not self._warned:
                    log.warning("tenant limits: store unreachable (%s); keeping the last limits", type(exc).__name__)
                    self._warned = True
            await asyncio.sleep(self.poll_s)


async def seed(redis: Redis, cfg: SidegateConfig) -> None:
    """Write the config's tenant limits into the store (config wins at start) and announce them,
    with the keystore's writers the control plane uses too (one MULTI/EXEC)."""
    pipe = redis.pipeline(transaction=True)
    for name, t in cfg.tenants.items():
        lim = t.quota.limits
        pipe.sadd(keystore.TENANT_SET, name)
        keystore.queue_tenant_limits(pipe, name, TenantLimits(rpm=lim.rpm, tpm=lim.tpm, daily_usd=lim.daily_usd,
                                                                    monthly_usd=lim.monthly_usd))  # fmt: skip
    keystore.announce_config(pipe)
    await pipe.execute()

"""Live tenant, team and user limits: the store's `sg:tenant:<name>`, `sg:team:<tenant>/<team>` and
`sg:user:<tenant>/<user>` hashes (set by the control plane, seeded from the YAML at start), cached
in-process and reloaded when `sg:config:version` moves (polled)."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from sidegate import keystore, orgstore
from sidegate.config import SidegateConfig
from sidegate.features.quota import Limits, TenantQuota
from sidegate.keystore import TenantLimits
from sidegate.orgstore import TeamRecord, UserRecord

log = logging.getLogger("sidegate.tenants")


def _limits(t: TenantLimits) -> Limits:
    return Limits(rpm=t.rpm, tpm=t.tpm, daily_usd=t.daily_usd, monthly_usd=t.monthly_usd)


class TenantQuotas:
    """{tenant: TenantQuota}: limits from the store, per-key/per-model overrides from the config;
    {(tenant, team)} and {(tenant, user)}: the teams' and users' limits from the store."""

    def __init__(self, cfg: SidegateConfig, redis: Redis, poll_s: float = 0.25):
        self.cfg = cfg
        self.redis = redis
        self.poll_s = poll_s
        self.version = -1
        self.quotas: dict[str, TenantQuota] = {name: t.quota for name, t in cfg.tenants.items()}
        self.teams: dict[tuple[str, str], Limits] = {}
        self.users: dict[tuple[str, str], Limits] = {}
        self._warned = False

    def get(self, tenant: str) -> TenantQuota | None:
        return self.quotas.get(tenant)

    def team(self, tenant: str, team: str) -> Limits | None:
        return self.teams.get((tenant, team))

    def user(self, tenant: str, user: str) -> Limits | None:
        return self.users.get((tenant, user))

    async def refresh(self) -> None:
        version = int(await self.redis.get(keystore.CONFIG_VERSION) or 0)
        if version == self.version:
            return
        version, limits = await keystore.load_tenants(self.redis)
        org = await orgstore.load_org(self.redis)
        quotas = {name: t.quota for name, t in self.cfg.tenants.items()}
        for name, lim in limits.items():
            base = quotas.get(name, TenantQuota())
            quotas[name] = base.model_copy(update={"limits": _limits(lim)})
        self.teams = {k: _limits(t.limits) for k, t in org.teams.items()}
        self.users = {k: _limits(u.limits) for k, u in org.users.items()}
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


def _stored(lim: Limits) -> TenantLimits:
    return TenantLimits(rpm=lim.rpm, tpm=lim.tpm, daily_usd=lim.daily_usd, monthly_usd=lim.monthly_usd)


async def seed(redis: Redis, cfg: SidegateConfig) -> None:
    """Write the config's tenant limits, teams and users into the store (config wins at start for the
    names it has) and announce them, with the writers the control plane uses too (one MULTI/EXEC)."""
    pipe = redis.pipeline(transaction=True)
    for name, t in cfg.tenants.items():
        pipe.sadd(keystore.TENANT_SET, name)
        keystore.queue_tenant_limits(pipe, name, _stored(t.quota.limits))
        for tname, team in t.teams.items():
            orgstore.queue_team(pipe, TeamRecord(name, tname, _stored(team.limits), tuple(team.models)))
        for uname, user in t.users.items():
            orgstore.queue_user(
                pipe, UserRecord(name, uname, user.team or "", _stored(user.limits), tuple(user.models))
            )
    keystore.announce_config(pipe)
    await pipe.execute()

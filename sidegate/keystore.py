"""Tenant key records in the Redis-protocol store (the runtime source of truth).

Layout (all under the ``{sg}:`` prefix, one hash tag: sidegate/store/layout.py; shown below without it):
- ``sg:key:<id>``  hash: tenant, hash, models (JSON list), revoked ("0"/"1"), expires_at (epoch s, 0 = never),
  team and user (absent = the key belongs to the tenant itself)
- ``sg:keys``      set of key ids
- ``sg:keys:version`` counter bumped on every change; replicas poll it (cheap GET) and reload.
- channel ``sg:keys:changed`` published on every change for immediate invalidation.
- ``sg:tenants``   set of tenant names (every tenant that has a key is in it, plus tenants made by the
  control plane).
- ``sg:tenant:<name>`` hash of that tenant's limits, one field per limit set: ``rpm``, ``tpm`` (integer
  strings), ``daily_usd``, ``monthly_usd`` (decimal strings). A missing field (or hash) = no limit.
- ``sg:config:version`` counter bumped on every non-key change (tenants, limits, teams and users:
  their layout is in :mod:`sidegate.orgstore`); channel
  ``sg:config:changed`` published with it.

Key records may carry extra fields (the control plane adds ``created_at``); readers ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from sidegate.config import SidegateConfig
from sidegate.store.layout import CONFIG_PREFIX, queue_publish

KEY_SET = CONFIG_PREFIX + "keys"
VERSION = CONFIG_PREFIX + "keys:version"
CHANNEL = CONFIG_PREFIX + "keys:changed"
TENANT_SET = CONFIG_PREFIX + "tenants"
CONFIG_VERSION = CONFIG_PREFIX + "config:version"
CONFIG_CHANNEL = CONFIG_PREFIX + "config:changed"
LIMIT_FIELDS = ("rpm", "tpm", "daily_usd", "monthly_usd")


def record_key(kid: str) -> str:
    return f"{CONFIG_PREFIX}key:{kid}"


def tenant_key(name: str) -> str:
    return f"{CONFIG_PREFIX}tenant:{name}"


@dataclass(slots=True, frozen=True)
class KeyRecord:
    id: str
    tenant: str
    hash: str
    models: tuple[str, ...] = ("*",)
    revoked: bool = False
    expires_at: float = 0.0
    team: str = ""
    """The team inside the tenant this key belongs to ("" = none)."""
    user: str = ""
    """The user inside the tenant this key belongs to ("" = none)."""

    def to_redis(self) -> dict[str, str]:
        out = {
            "tenant": self.tenant,
            "hash": self.hash,
            "models": orjson.dumps(list(self.models)).decode(),
            "revoked": "1" if self.revoked else "0",
            "expires_at": repr(self.expires_at),
        }
        if self.team:
            out["team"] = self.team
        if self.user:
            out["user"] = self.user
        return out

    @classmethod
    def from_redis(cls, kid: str, raw: dict[bytes, bytes]) -> KeyRecord:
        return cls(
            id=kid,
            tenant=raw[b"tenant"].decode(),
            hash=raw[b"hash"].decode(),
            models=tuple(orjson.loads(raw.get(b"models", b'["*"]'))),
            revoked=raw.get(b"revoked", b"0") == b"1",
            expires_at=float(raw.get(b"expires_at", b"0")),
            team=raw.get(b"team", b"").decode(),
            user=raw.get(b"user", b"").decode(),
        )


def records_from_config(cfg: SidegateConfig) -> list[KeyRecord]:
    """A user's key stores the user alone: its team is the user's, read live (see sidegate.orgstore)."""
    return [
        KeyRecord(
            id=k.id,
            tenant=tname,
            hash=k.hash,
            models=tuple(k.models),
            revoked=k.revoked,
            team="" if k.user else k.team or "",
            user=k.user or "",
        )
        for tname, tenant in cfg.tenants.items()
        for k in tenant.keys
    ]


async def put(redis: Redis, records: list[KeyRecord]) -> None:
    """Write records and announce the change (one MULTI/EXEC round trip)."""
    pipe = redis.pipeline(transaction=True)
    for rec in records:
        pipe.hdel(record_key(rec.id), "team", "user")  # absent from the record = none
        pipe.hset(record_key(rec.id), mapping=rec.to_redis())
        pipe.sadd(KEY_SET, rec.id)
        pipe.sadd(TENANT_SET, rec.tenant)
    pipe.incr(VERSION)
    await pipe.execute()
    await redis.publish(CHANNEL, b"1")


async def seed(redis: Redis, cfg: SidegateConfig) -> int:
    """Load the config's keys into the store (config wins for the ids it names)."""
    recs = records_from_config(cfg)
    if recs:
        await put(redis, recs)
    return len(recs)


async def load_all(redis: Redis) -> tuple[int, dict[str, KeyRecord]]:
    """(version, records) read consistently enough: version first, then the records."""
    version = int(await redis.get(VERSION) or 0)
    kids = sorted(k.decode() for k in await redis.smembers(KEY_SET))
    pipe = redis.pipeline(transaction=False)
    for kid in kids:
        pipe.hgetall(record_key(kid))
    out: dict[str, KeyRecord] = {}
    for kid, raw in zip(kids, await pipe.execute(), strict=True):
        if raw:
            out[kid] = KeyRecord.from_redis(kid, raw)
    return version, out


@dataclass(slots=True, frozen=True)
class TenantLimits:
    """A tenant's limits; None = unlimited. Stored as the fields of ``sg:tenant:<name>``."""

    rpm: int | None = None
    tpm: int | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None

    def to_dict(self) -> dict[str, int | float | None]:
        return {k: getattr(self, k) for k in LIMIT_FIELDS}

    def to_redis(self) -> dict[str, str]:
        """Only the limits that are set (unset ones are absent from the hash)."""
        return {k: repr(v) for k, v in self.to_dict().items() if v is not None}

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> TenantLimits:
        def num(name: str) -> float | None:
            v = raw.get(name.encode())
            return float(v) if v is not None else None

        rpm, tpm = num("rpm"), num("tpm")
        return cls(
            rpm=None if rpm is None else int(rpm),
            tpm=None if tpm is None else int(tpm),
            daily_usd=num("daily_usd"),
            monthly_usd=num("monthly_usd"),
        )


async def tenant_limits(redis: Redis, name: str) -> TenantLimits:
    """One tenant's limits (all None when none are set or the tenant is unknown)."""
    return TenantLimits.from_redis(await redis.hgetall(tenant_key(name)))


async def load_tenants(redis: Redis) -> tuple[int, dict[str, TenantLimits]]:
    """(config version, limits of every known tenant); reload when ``CONFIG_VERSION`` moves."""
    version = int(await redis.get(CONFIG_VERSION) or 0)
    names = sorted(n.decode() for n in await redis.smembers(TENANT_SET))
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(tenant_key(name))
    raws = await pipe.execute()
    return version, {n: TenantLimits.from_redis(r) for n, r in zip(names, raws, strict=True)}


# Writers queued on a MULTI pipeline, shared by the control plane's operations and the start-up seed of
# the config's tenants, so both announce a change the same way replicas expect (counter, then channel).


def announce_keys(pipe: Pipeline) -> None:
    pipe.incr(VERSION)
    queue_publish(pipe, CHANNEL, b"1")


def announce_config(pipe: Pipeline) -> None:
    pipe.incr(CONFIG_VERSION)
    queue_publish(pipe, CONFIG_CHANNEL, b"1")


def queue_tenant_limits(pipe: Pipeline, name: str, limits: TenantLimits) -> None:
    """Replace the tenant's limits hash (an unlimited tenant has none)."""
    pipe.delete(tenant_key(name))
    if fields := limits.to_redis():
        pipe.hset(tenant_key(name), mapping=fields)

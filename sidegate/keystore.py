"""Tenant key records in the Redis-protocol store (the runtime source of truth).

Layout (all under the ``sg:`` prefix):
- ``sg:key:<id>``  hash: tenant, hash, models (JSON list), revoked ("0"/"1"), expires_at (epoch s, 0 = never)
- ``sg:keys``      set of key ids
- ``sg:keys:version`` counter bumped on every change; replicas poll it (cheap GET) and reload.
- channel ``sg:keys:changed`` published on every change for immediate invalidation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis

from sidegate.config import SidegateConfig

KEY_SET = "sg:keys"
VERSION = "sg:keys:version"
CHANNEL = "sg:keys:changed"


def record_key(kid: str) -> str:
    return f"sg:key:{kid}"


@dataclass(slots=True, frozen=True)
class KeyRecord:
    id: str
    tenant: str
    hash: str
    models: tuple[str, ...] = ("*",)
    revoked: bool = False
    expires_at: float = 0.0
    allow_all: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_all", "*" in self.models)

    def allows(self, model: str) -> bool:
        return self.allow_all or model in self.models

    def to_redis(self) -> dict[str, str]:
        return {
            "tenant": self.tenant,
            "hash": self.hash,
            "models": orjson.dumps(list(self.models)).decode(),
            "revoked": "1" if self.revoked else "0",
            "expires_at": repr(self.expires_at),
        }

    @classmethod
    def from_redis(cls, kid: str, raw: dict[bytes, bytes]) -> KeyRecord:
        return cls(
            id=kid,
            tenant=raw[b"tenant"].decode(),
            hash=raw[b"hash"].decode(),
            models=tuple(orjson.loads(raw.get(b"models", b'["*"]'))),
            revoked=raw.get(b"revoked", b"0") == b"1",
            expires_at=float(raw.get(b"expires_at", b"0")),
        )


def records_from_config(cfg: SidegateConfig) -> list[KeyRecord]:
    return [
        KeyRecord(id=k.id, tenant=tname, hash=k.hash, models=tuple(k.models), revoked=k.revoked)
        for tname, tenant in cfg.tenants.items()
        for k in tenant.keys
    ]


async def put(redis: Redis, records: list[KeyRecord]) -> None:
    """Write records and announce the change (one MULTI/EXEC round trip)."""
    pipe = redis.pipeline(transaction=True)
    for rec in records:
        pipe.hset(record_key(rec.id), mapping=rec.to_redis())
        pipe.sadd(KEY_SET, rec.id)
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

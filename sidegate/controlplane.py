"""Live management of tenants and keys in the store: the operations behind the admin API and CLI.

Every change is one MULTI/EXEC transaction (guarded by WATCH) that also bumps the matching version
counter and publishes on its channel, so replicas polling the counters reload within one poll period:
key changes bump ``sg:keys:version`` (authz's KeyCache), tenant/limit changes bump
``sg:config:version``. See :mod:`sidegate.keystore` for the layout. Plaintext keys are returned once by
:meth:`ControlPlane.create_key` / :meth:`ControlPlane.rotate_key` and never stored or logged.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from sidegate import keys
from sidegate.keystore import (
    CHANNEL,
    CONFIG_CHANNEL,
    CONFIG_VERSION,
    KEY_SET,
    LIMIT_FIELDS,
    TENANT_SET,
    VERSION,
    KeyRecord,
    TenantLimits,
    record_key,
    tenant_key,
)

T = TypeVar("T")

# Input rules (the OpenAPI document in sidegate.admin.openapi states the same ones).
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # as config's names
KEY_ID_PATTERN = r"^[a-z0-9]{8}$"
MODEL_PATTERN = r"^[!-~]{1,200}$"  # printable ASCII, no spaces; "*" = every model
MAX_MODELS = 100
MAX_OVERLAP_S = 30 * 86400
MAX_EXPIRES_AT = 253402300799.0  # 9999-12-31
MAX_LIMIT = 1e12
DEFAULT_OVERLAP_S = 3600.0
_TXN_TRIES = 8


async def _load_key(r: Redis | Pipeline, kid: str) -> KeyInfo:
    """A key's record (in a WATCHed pipeline too: its commands run at once), or NotFound."""
    raw = await r.hgetall(record_key(kid))
    if not raw:
        raise NotFound(f"no key with id {kid}")
    return KeyInfo.from_redis(kid, raw)


class ControlPlaneError(Exception):
    """A refused operation; ``status`` is the HTTP status the admin API answers with."""

    status = 400
    code = "invalid_request"


class Invalid(ControlPlaneError, ValueError):
    pass


class NotFound(ControlPlaneError):
    status = 404
    code = "not_found"


class Conflict(ControlPlaneError):
    status = 409
    code = "conflict"


# ---- validation (shared by the CLI and the admin API) ----


def _match(pattern: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern[1:-1], value):
        raise Invalid(f"{what} must be a string matching {pattern}")
    return value


def check_tenant(name: Any) -> str:
    return _match(TENANT_PATTERN, name, "tenant name")


def check_key_id(kid: Any) -> str:
    return _match(KEY_ID_PATTERN, kid, "key id")


def check_models(models: Any) -> tuple[str, ...]:
    if isinstance(models, str) or not isinstance(models, Iterable):
        raise Invalid("models must be a list of model names")
    models = list(models)
    if not 1 <= len(models) <= MAX_MODELS:
        raise Invalid(f"models must list 1 to {MAX_MODELS} names ('*' = every model)")
    out: list[str] = []
    for m in models:
        _match(MODEL_PATTERN, m, "each model")
        if m not in out:
            out.append(m)
    return tuple(out)


def _number(
    value: Any, what: str, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{what} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{what} must be a finite number")
    if integer and value != int(value):
        raise Invalid(f"{what} must be an integer")
    if value < lo or (lo_open and value == lo) or value > hi:
        raise Invalid(f"{what} must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")
    return float(value)


def check_expires_at(value: Any) -> float | None:
    """Epoch seconds, or None for a key that never expires. A past time makes an already expired key."""
    if value is None:
        return None
    return _number(value, "expires_at", 0, MAX_EXPIRES_AT, lo_open=True)


def check_overlap(value: Any) -> float:
    return _number(value, "overlap_s", 0, MAX_OVERLAP_S)


def check_limits(data: Any) -> TenantLimits:
    """A limits object: any of rpm, tpm (integers), daily_usd, monthly_usd (numbers); null = unlimited."""
    if not isinstance(data, Mapping):
        raise Invalid("limits must be an object")
    unknown = sorted(set(data) - set(LIMIT_FIELDS))
    if unknown:
        raise Invalid(
            f"unknown limit field(s): {', '.join(map(str, unknown))}; known: {', '.join(LIMIT_FIELDS)}"
        )
    vals: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        v = data.get(name)
        if v is not None:
            integer = name in ("rpm", "tpm")
            n = _number(v, name, 0, MAX_LIMIT, integer=integer)
            vals[name] = int(n) if integer else n
    return TenantLimits(**vals)


# ---- views ----


@dataclass(slots=True, frozen=True)
class KeyInfo:
    """What may be shown about a key: never its hash or secret."""

    id: str
    tenant: str
    models: tuple[str, ...]
    revoked: bool
    expires_at: float | None
    created_at: float | None
    revoked_at: float | None

    def status(self, now: float | None = None) -> str:
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "models": list(self.models),
            "revoked": self.revoked,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "status": self.status(now),
        }

    @classmethod
    def from_redis(cls, kid: str, raw: dict[bytes, bytes]) -> KeyInfo:
        rec = KeyRecord.from_redis(kid, raw)

        def opt(field: bytes) -> float | None:
            v = float(raw.get(field, b"0") or 0)
            return v or None

        return cls(
            id=kid,
            tenant=rec.tenant,
            models=rec.models,
            revoked=rec.revoked,
            expires_at=rec.expires_at or None,
            created_at=opt(b"created_at"),
            revoked_at=opt(b"revoked_at"),
        )


@dataclass(slots=True, frozen=True)
class TenantInfo:
    name: str
    limits: TenantLimits
    keys: int
    """Number of usable (not revoked, not expired) keys."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limits": self.limits.to_dict(), "active_keys": self.keys}


@dataclass(slots=True, frozen=True)
class Rotation:
    key: str
    """The new plaintext key (shown once)."""
    new: KeyInfo
    old: KeyInfo


# ---- operations ----


class ControlPlane:
    """Tenant and key operations on one store; ``clock`` is injectable for tests."""

    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time):
        self.redis = redis
        self.clock = clock

    async def _transact(self, watch: Callable[[], list[str]], body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``body`` under WATCH of ``watch()``; it reads immediately, calls ``pipe.multi()``, queues writes."""
        for _ in range(_TXN_TRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*watch())
                    result = await body(pipe)
                    if pipe.explicit_transaction:
                        await pipe.execute()
                    return result
                except WatchError:
                    continue
        raise Conflict("the store changed during the operation too many times; try again")

    @staticmethod
    def _announce_keys(pipe: Pipeline) -> None:
        pipe.incr(VERSION)
        pipe.publish(CHANNEL, b"1")

    @staticmethod
    def announce_config(pipe: Pipeline) -> None:
        pipe.incr(CONFIG_VERSION)
        pipe.publish(CONFIG_CHANNEL, b"1")

    # keys

    async def create_key(
        self, tenant: str, models: Iterable[str] = ("*",), expires_at: float | None = None
    ) -> tuple[str, KeyInfo]:
        """A new key for ``tenant`` (registered if new): (plaintext key, shown once; its record)."""
        tenant, mods, exp = check_tenant(tenant), check_models(models), check_expires_at(expires_at)
        plaintext = kid = ""  # drawn afresh on every try (see watched)

        async def body(pipe: Pipeline) -> KeyInfo:
            if await pipe.exists(record_key(kid)):
                raise WatchError("id taken")  # astronomically rare: retry with a fresh id
            new_tenant = not await pipe.sismember(TENANT_SET, tenant)
            now = self.clock()
            rec = KeyRecord(
                id=kid, tenant=tenant, hash=keys.hash_key(plaintext), models=mods, expires_at=exp or 0.0
            )
            pipe.multi()
            pipe.hset(record_key(kid), mapping={**rec.to_redis(), "created_at": repr(now)})
            pipe.sadd(KEY_SET, kid)
            pipe.sadd(TENANT_SET, tenant)
            self._announce_keys(pipe)
            if new_tenant:
                self.announce_config(pipe)
            return KeyInfo(kid, tenant, mods, False, exp, now, None)

        def watched() -> list[str]:
            nonlocal plaintext, kid
            plaintext, kid = keys.new_key()
            return [record_key(kid), TENANT_SET]

        info = await self._transact(watched, body)
        return plaintext, info

    async def get_key(self, kid: str) -> KeyInfo:
        return await _load_key(self.redis, check_key_id(kid))

    async def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        if tenant is not None:
            check_tenant(tenant)
        infos = await self._all_keys()
        return [i for i in infos if tenant is None or i.tenant == tenant]

    async def _all_keys(self, redis: Redis | Pipeline | None = None) -> list[KeyInfo]:
        r = redis or self.redis
        kids = sorted(k.decode() for k in await r.smembers(KEY_SET))
        raws = (
            [await r.hgetall(record_key(k)) for k in kids]
            if isinstance(r, Pipeline)
            else await self._hgetall(kids)
        )
        infos = [KeyInfo.from_redis(k, raw) for k, raw in zip(kids, raws, strict=True) if raw]
        return sorted(infos, key=lambda i: (i.created_at or 0.0, i.id))

    async def _hgetall(self, kids: list[str]) -> list[dict[bytes, bytes]]:
        pipe = self.redis.pipeline(transaction=False)
        for kid in kids:
            pipe.hgetall(record_key(kid))
        return list(await pipe.execute())

    async def revoke_key(self, kid: str) -> KeyInfo:
        """Mark a key revoked (idempotent); authz refuses it after its next reload."""
        check_key_id(kid)

        async def body(pipe: Pipeline) -> KeyInfo:
            info = await _load_key(pipe, kid)
            if info.revoked:
                return info
            now = self.clock()
            pipe.multi()
            pipe.hset(record_key(kid), mapping={"revoked": "1", "revoked_at": repr(now)})
            self._announce_keys(pipe)
            return KeyInfo(kid, info.tenant, info.models, True, info.expires_at, info.created_at, now)

        return await self._transact(lambda: [record_key(kid)], body)

    async def rotate_key(
        self, kid: str, overlap_s: float = DEFAULT_OVERLAP_S, expires_at: float | None = None
    ) -> Rotation:
        """A new key with the same tenant and models; the old one expires ``overlap_s`` from now.

        An earlier expiry of the old key is kept (rotation never extends a key's life).
        """
        check_key_id(kid)
        overlap, exp = check_overlap(overlap_s), check_expires_at(expires_at)
        plaintext = new_id = ""  # drawn afresh on every try (see watched)

        async def body(pipe: Pipeline) -> Rotation:
            old = await _load_key(pipe, kid)
            if old.revoked:
                raise Conflict(f"key {kid} is revoked; create a new key instead")
            if await pipe.exists(record_key(new_id)):
                raise WatchError("id taken")
            now = self.clock()
            old_exp = min(now + overlap, old.expires_at or math.inf)
            rec = KeyRecord(
                id=new_id,
                tenant=old.tenant,
                hash=keys.hash_key(plaintext),
                models=old.models,
                expires_at=exp or 0.0,
            )
            pipe.multi()
            pipe.hset(record_key(new_id), mapping={**rec.to_redis(), "created_at": repr(now)})
            pipe.sadd(KEY_SET, new_id)
            pipe.hset(record_key(kid), "expires_at", repr(old_exp))
            self._announce_keys(pipe)
            new = KeyInfo(new_id, old.tenant, old.models, False, exp, now, None)
            old_after = KeyInfo(kid, old.tenant, old.models, False, old_exp, old.created_at, None)
            return Rotation(plaintext, new, old_after)

        def watched() -> list[str]:
            nonlocal plaintext, new_id
            plaintext, new_id = keys.new_key()
            return [record_key(kid), record_key(new_id)]

        return await self._transact(watched, body)

    # tenants

    async def _tenant_info(
        self, name: str, limits_raw: dict[bytes, bytes], all_keys: list[KeyInfo]
    ) -> TenantInfo:
        now = self.clock()
        active = sum(1 for k in all_keys if k.tenant == name and k.status(now) == "active")
        return TenantInfo(name, TenantLimits.from_redis(limits_raw), active)

    async def get_tenant(self, name: str) -> TenantInfo:
        check_tenant(name)
        if not await self.redis.sismember(TENANT_SET, name):
            raise NotFound(f"no tenant named {name}")
        raw = await self.redis.hgetall(tenant_key(name))
        return await self._tenant_info(name, raw, await self._all_keys())

    async def list_tenants(self) -> list[TenantInfo]:
        names = sorted(n.decode() for n in await self.redis.smembers(TENANT_SET))
        pipe = self.redis.pipeline(transaction=False)
        for n in names:
            pipe.hgetall(tenant_key(n))
        raws = await pipe.execute()
        all_keys = await self._all_keys()
        return [await self._tenant_info(n, r, all_keys) for n, r in zip(names, raws, strict=True)]

    async def create_tenant(self, name: str, limits: TenantLimits | None = None) -> tuple[TenantInfo, bool]:
        """Register a tenant (idempotent); with ``limits``, also replace its limits. -> (tenant, created)."""
        check_tenant(name)

        async def body(pipe: Pipeline) -> bool:
            exists = bool(await pipe.sismember(TENANT_SET, name))
            if exists and limits is None:
                return False
            pipe.multi()
            pipe.sadd(TENANT_SET, name)
            if limits is not None:
                self.queue_limits(pipe, name, limits)
            self.announce_config(pipe)
            return not exists

        created = await self._transact(lambda: [TENANT_SET, tenant_key(name)], body)
        return await self.get_tenant(name), created

    @staticmethod
    def queue_limits(pipe: Pipeline, name: str, limits: TenantLimits) -> None:
        pipe.delete(tenant_key(name))
        if fields := limits.to_redis():
            pipe.hset(tenant_key(name), mapping=fields)

    async def set_limits(self, name: str, limits: TenantLimits) -> TenantInfo:
        """Replace a tenant's limits (fields that are None become unlimited)."""
        check_tenant(name)

        async def body(pipe: Pipeline) -> None:
            if not await pipe.sismember(TENANT_SET, name):
                raise NotFound(f"no tenant named {name}")
            pipe.multi()
            self.queue_limits(pipe, name, limits)
            self.announce_config(pipe)

        await self._transact(lambda: [TENANT_SET, tenant_key(name)], body)
        return await self.get_tenant(name)

    async def delete_tenant(self, name: str) -> int:
        """Forget a tenant and its limits and revoke its keys; returns how many keys were revoked."""
        check_tenant(name)
        watched: list[str] = []

        def watch() -> list[str]:
            return [TENANT_SET, KEY_SET, tenant_key(name), *watched]

        async def body(pipe: Pipeline) -> int:
            if not await pipe.sismember(TENANT_SET, name):
                raise NotFound(f"no tenant named {name}")
            mine = [k for k in await self._all_keys(pipe) if k.tenant == name and not k.revoked]
            new_watch = [record_key(k.id) for k in mine]
            if set(new_watch) - set(watched):  # watch the records too, then read again
                watched[:] = new_watch
                raise WatchError("watching key records")
            now = repr(self.clock())
            pipe.multi()
            pipe.srem(TENANT_SET, name)
            pipe.delete(tenant_key(name))
            for k in mine:
                pipe.hset(record_key(k.id), mapping={"revoked": "1", "revoked_at": now})
            if mine:
                self._announce_keys(pipe)
            self.announce_config(pipe)
            return len(mine)

        return await self._transact(watch, body)

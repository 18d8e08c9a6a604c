"""The control plane's operations on tenants, limits and keys in the store.

Every change is one MULTI/EXEC transaction (guarded by WATCH) that also bumps the matching version
counter and publishes on its channel, so replicas polling the counters reload within one poll period:
key changes bump ``sg:keys:version`` (authz's KeyCache), tenant/limit changes bump
``sg:config:version``. See :mod:`sidegate.keystore` for the layout. Plaintext keys are returned once by
:meth:`ControlPlane.create_key` / :meth:`ControlPlane.rotate_key` and never stored or logged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from sidegate import keys
from sidegate.admin.audit import queue_audit
from sidegate.admin.controlplane.org import (
    OrgOperations,
    check_member_opt,
    check_owner,
    member_names,
    owner_keys,
)
from sidegate.admin.controlplane.rules import (
    DEFAULT_OVERLAP_S,
    Conflict,
    NotFound,
    check_expires_at,
    check_key_id,
    check_models,
    check_overlap,
    check_tenant,
)
from sidegate.admin.controlplane.token_store import (
    TOKEN_SET,
    queue_revoke_token,
    tenant_token_ids,
    token_record_key,
)
from sidegate.admin.controlplane.views import KeyInfo, Rotation, TenantInfo, load_key
from sidegate.admin.principal import OWNER_ENV, Principal
from sidegate.keystore import (
    KEY_SET,
    TENANT_SET,
    KeyRecord,
    TenantLimits,
    announce_config,
    announce_keys,
    queue_tenant_limits,
    record_key,
    tenant_key,
)
from sidegate.orgstore import queue_forget_tenant, teams_key, users_key

T = TypeVar("T")

_TXN_TRIES = 8


class ControlPlane(OrgOperations):
    """Tenant, team, user and key operations on one store, done by ``principal`` (audited);
    ``clock`` is injectable for tests."""

    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time, principal: Principal = OWNER_ENV):
        self.redis = redis
        self.clock = clock
        self.principal = principal

    def acting(self, principal: Principal) -> ControlPlane:
        """The same operations on the same store, done (and audited) as ``principal``."""
        return type(self)(self.redis, self.clock, principal)

    def _audit(
        self, pipe: Pipeline, action: str, target: str, before: object, after: object, now: float
    ) -> None:
        """Queue the change's audit entry in its own MULTI (sidegate/admin/audit.py)."""
        queue_audit(pipe, self.principal, action, target, before, after, now)

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

    # keys

    async def create_key(
        self,
        tenant: str,
        models: Iterable[str] = ("*",),
        expires_at: float | None = None,
        *,
        team: str | None = None,
        user: str | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key for ``tenant`` (registered if new): (plaintext key, shown once; its record).

        With ``team`` or ``user`` (which must exist in the tenant), the key belongs to them; a user's
        key stores the user alone (its team is the user's, live), so naming both requires the user
        to be in that team."""
        tenant, mods, exp = check_tenant(tenant), check_models(models), check_expires_at(expires_at)
        team, user = check_member_opt(team, "team"), check_member_opt(user, "user")
        plaintext = kid = ""  # drawn afresh on every try (see watched)

        async def body(pipe: Pipeline) -> KeyInfo:
            if await pipe.exists(record_key(kid)):
                raise WatchError("id taken")  # astronomically rare: retry with a fresh id
            new_tenant = not await pipe.sismember(TENANT_SET, tenant)
            await check_owner(pipe, tenant, team, user)
            now = self.clock()
            rec = KeyRecord(
                id=kid, tenant=tenant, hash=keys.hash_key(plaintext), models=mods, expires_at=exp or 0.0,
                team="" if user else team or "", user=user or "",
            )  # fmt: skip
            pipe.multi()
            pipe.hset(record_key(kid), mapping={**rec.to_redis(), "created_at": repr(now)})
            pipe.sadd(KEY_SET, kid)
            pipe.sadd(TENANT_SET, tenant)
            announce_keys(pipe)
            if new_tenant:
                announce_config(pipe)
            info = KeyInfo(kid, tenant, mods, False, exp, now, None, rec.team, rec.user)
            self._audit(pipe, "key.create", f"key:{kid}", None, info.audit_view(), now)
            return info

        def watched() -> list[str]:
            nonlocal plaintext, kid
            plaintext, kid = keys.new_key()
            return [record_key(kid), TENANT_SET, *owner_keys(tenant, team, user)]

        info = await self._transact(watched, body)
        return plaintext, info

    async def get_key(self, kid: str) -> KeyInfo:
        return await load_key(self.redis, check_key_id(kid))

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
            info = await load_key(pipe, kid)
            if info.revoked:
                return info
            now = self.clock()
            pipe.multi()
            pipe.hset(record_key(kid), mapping={"revoked": "1", "revoked_at": repr(now)})
            announce_keys(pipe)
            after = replace(info, revoked=True, revoked_at=now)
            self._audit(pipe, "key.revoke", f"key:{kid}", info.audit_view(), after.audit_view(), now)
            return after

        return await self._transact(lambda: [record_key(kid)], body)

    async def rotate_key(
        self, kid: str, overlap_s: float = DEFAULT_OVERLAP_S, expires_at: float | None = None
    ) -> Rotation:
        """A new key with the same tenant, team, user and models; the old one expires ``overlap_s`` from now.

        An earlier expiry of the old key is kept (rotation never extends a key's life).
        """
        check_key_id(kid)
        overlap, exp = check_overlap(overlap_s), check_expires_at(expires_at)
        plaintext = new_id = ""  # drawn afresh on every try (see watched)

        async def body(pipe: Pipeline) -> Rotation:
            old = await load_key(pipe, kid)
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
                team=old.team if not old.user else "",
                user=old.user,
            )
            pipe.multi()
            pipe.hset(record_key(new_id), mapping={**rec.to_redis(), "created_at": repr(now)})
            pipe.sadd(KEY_SET, new_id)
            pipe.hset(record_key(kid), "expires_at", repr(old_exp))
            announce_keys(pipe)
            new = replace(old, id=new_id, expires_at=exp, created_at=now)
            old_after = replace(old, expires_at=old_exp)
            after = {"tenant": old.tenant, "previous": old_after.audit_view(), "new": new.audit_view()}
            self._audit(pipe, "key.rotate", f"key:{kid}", old.audit_view(), after, now)
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
            before = _tenant_view(name, await pipe.hgetall(tenant_key(name))) if exists else None
            pipe.multi()
            pipe.sadd(TENANT_SET, name)
            if limits is not None:
                queue_tenant_limits(pipe, name, limits)
            announce_config(pipe)
            after = {"name": name, "limits": (limits or TenantLimits()).to_dict()}
            action = "tenant.limits" if exists else "tenant.create"
            self._audit(pipe, action, f"tenant:{name}", before, after, self.clock())
            return not exists

        created = await self._transact(lambda: [TENANT_SET, tenant_key(name)], body)
        return await self.get_tenant(name), created

    async def set_limits(self, name: str, limits: TenantLimits) -> TenantInfo:
        """Replace a tenant's limits (fields that are None become unlimited)."""
        check_tenant(name)

        async def body(pipe: Pipeline) -> None:
            if not await pipe.sismember(TENANT_SET, name):
                raise NotFound(f"no tenant named {name}")
            before = _tenant_view(name, await pipe.hgetall(tenant_key(name)))
            pipe.multi()
            queue_tenant_limits(pipe, name, limits)
            announce_config(pipe)
            after = {"name": name, "limits": limits.to_dict()}
            self._audit(pipe, "tenant.limits", f"tenant:{name}", before, after, self.clock())

        await self._transact(lambda: [TENANT_SET, tenant_key(name)], body)
        return await self.get_tenant(name)

    async def delete_tenant(self, name: str) -> int:
        """Forget a tenant, its limits, teams and users, and revoke its keys and admin tokens (a tenant
        created again under the same name inherits none of them); returns how many keys were revoked."""
        check_tenant(name)
        watched: list[str] = []

        def watch() -> list[str]:
            return [TENANT_SET, KEY_SET, TOKEN_SET, tenant_key(name), teams_key(name), users_key(name), *watched]

        async def body(pipe: Pipeline) -> int:
            if not await pipe.sismember(TENANT_SET, name):
                raise NotFound(f"no tenant named {name}")
            mine = [k for k in await self._all_keys(pipe) if k.tenant == name and not k.revoked]
            tokens = await tenant_token_ids(pipe, name)
            new_watch = [record_key(k.id) for k in mine] + [token_record_key(t) for t in tokens]
            if set(new_watch) - set(watched):  # watch the records too, then read again
                watched[:] = new_watch
                raise WatchError("watching key records")
            teams, users = await member_names(pipe, name)
            before = _tenant_view(name, await pipe.hgetall(tenant_key(name)))
            before["teams"], before["users"] = teams, users
            now = self.clock()
            pipe.multi()
            pipe.srem(TENANT_SET, name)
            pipe.delete(tenant_key(name))
            queue_forget_tenant(pipe, name, teams, users)
            for k in mine:
                pipe.hset(record_key(k.id), mapping={"revoked": "1", "revoked_at": repr(now)})
            for tid in tokens:
                queue_revoke_token(pipe, tid, now)
            if mine:
                announce_keys(pipe)
            announce_config(pipe)
            after = {
                "name": name,
                "deleted": True,
                "deleted_teams": teams,
                "deleted_users": users,
                "revoked_keys": [k.id for k in mine],
                "revoked_admin_tokens": tokens,
            }
            self._audit(pipe, "tenant.delete", f"tenant:{name}", before, after, now)
            return len(mine)

        return await self._transact(watch, body)


def _tenant_view(name: str, limits_raw: dict[bytes, bytes]) -> dict[str, object]:
    """A tenant as the audit log shows it before a change."""
    return {"name": name, "limits": TenantLimits.from_redis(limits_raw).to_dict()}

"""Admin tokens: scoped credentials for the admin API, stored hashed like tenant keys.

A token looks like ``sga_<id>_<secret>`` (a prefix distinct from tenant keys' ``sgk_``, so a key
pasted as an admin token, or the reverse, is refused by its shape). The id (8 lowercase
alphanumerics) selects the record; the whole token is hashed as tenant keys are
(:func:`sidegate.keys.hash_key`: SHA-256, HMAC with ``SIDEGATE_KEY_PEPPER`` when set) and compared in
constant time. The plaintext is returned once, at creation, and never stored or logged.

Layout:
- ``sg:admintoken:<id>`` hash: ``role``, ``tenant`` ("" = every tenant), ``name``, ``hash``,
  ``created_at``, ``expires_at`` (0 = never), ``revoked`` ("0"/"1"), ``revoked_at``, ``created_by``.
- ``sg:admintokens`` set of ids.

The admin API looks the record up on every request (it is off the data path), so a revocation
applies to the very next request.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from sidegate import keys
from sidegate.admin.audit import queue_audit
from sidegate.admin.controlplane import ControlPlane
from sidegate.admin.controlplane.rules import Invalid, NotFound, check_expires_at, check_tenant
from sidegate.admin.controlplane.token_store import TOKEN_SET, queue_revoke_token
from sidegate.admin.controlplane.token_store import token_record_key as record_key
from sidegate.admin.principal import Principal, Role

PREFIX = "sga_"
TOKEN_ID_PATTERN = r"^[a-z0-9]{8}$"
TOKEN_PATTERN = r"^sga_[a-z0-9]{8}_[A-Za-z0-9_-]{20,128}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._@:/-]{0,99}$"
_TOKEN_RE = re.compile(r"^sga_([a-z0-9]{8})_[A-Za-z0-9_-]{20,128}$")
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_token() -> tuple[str, str]:
    """A fresh admin token and its id (256 random bits: a fast hash is the right tool)."""
    tid = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
    return f"{PREFIX}{tid}_{secrets.token_urlsafe(32)}", tid


def token_id(token: str) -> str | None:
    """The id part of a well-formed admin token, else None."""
    m = _TOKEN_RE.match(token)
    return m.group(1) if m else None


def check_token_id(tid: Any) -> str:
    if not isinstance(tid, str) or not re.fullmatch(TOKEN_ID_PATTERN[1:-1], tid):
        raise Invalid(f"token id must be a string matching {TOKEN_ID_PATTERN}")
    return tid


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN[1:-1], name):
        raise Invalid(f"name must be a string matching {NAME_PATTERN}")
    return name


def check_role(role: Any) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise Invalid(f"role must be one of {', '.join(r.value for r in Role)}") from None


@dataclass(slots=True, frozen=True)
class AdminTokenInfo:
    """What may be shown about an admin token: never its hash or secret."""

    id: str
    name: str
    role: Role
    tenant: str | None
    created_at: float | None
    expires_at: float | None
    revoked: bool
    revoked_at: float | None
    created_by: str

    def status(self, now: float) -> str:
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "tenant": self.tenant,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
            "created_by": self.created_by,
            "status": self.status(now),
        }

    def audit_view(self) -> dict[str, Any]:
        """The audit log's before/after view (no status: it depends on when it is read)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "tenant": self.tenant,
            "expires_at": self.expires_at,
            "revoked": self.revoked,
        }

    def to_redis(self, token_hash: str) -> dict[str, str]:
        return {
            "role": self.role.value,
            "tenant": self.tenant or "",
            "name": self.name,
            "hash": token_hash,
            "created_at": repr(self.created_at or 0.0),
            "expires_at": repr(self.expires_at or 0.0),
            "revoked": "1" if self.revoked else "0",
            "created_by": self.created_by,
        }

    @classmethod
    def from_redis(cls, tid: str, raw: dict[bytes, bytes]) -> AdminTokenInfo:
        def opt(field: bytes) -> float | None:
            return float(raw.get(field, b"0") or 0) or None

        return cls(
            id=tid,
            name=raw.get(b"name", b"").decode(),
            role=Role(raw[b"role"].decode()),
            tenant=raw.get(b"tenant", b"").decode() or None,
            created_at=opt(b"created_at"),
            expires_at=opt(b"expires_at"),
            revoked=raw.get(b"revoked", b"0") == b"1",
            revoked_at=opt(b"revoked_at"),
            created_by=raw.get(b"created_by", b"").decode(),
        )


async def load_token(r: Redis | Pipeline, tid: str) -> AdminTokenInfo:
    raw = await r.hgetall(record_key(tid))
    if not raw:
        raise NotFound(f"no admin token with id {tid}")
    return AdminTokenInfo.from_redis(tid, raw)


async def authenticate(redis: Redis, token: str, now: float) -> Principal | None:
    """The principal a presented ``sga_`` token stands for, or None (malformed, unknown, revoked,
    expired or wrong secret: the caller answers 401 alike, revealing nothing about which)."""
    tid = token_id(token)
    if tid is None:
        return None
    raw = await redis.hgetall(record_key(tid))
    stored = raw.get(b"hash", b"").decode() if raw else ""
    # Verify even for an unknown id (against a dummy) so timing does not tell ids apart.
    ok = keys.verify(token, stored or "sha256:" + "0" * 64) and bool(stored)
    if not ok:
        return None
    try:
        info = AdminTokenInfo.from_redis(tid, raw)
    except (KeyError, ValueError):
        return None
    if info.status(now) != "active":
        return None
    return Principal(f"token:{tid}", info.role, info.tenant)


# ---- operations (each change audited in its own MULTI, like the control plane's) ----


def check_scope(role: Role, tenant: Any) -> str | None:
    """A tenant_admin needs its tenant; a viewer may have one (none = every tenant); an owner has none."""
    if tenant is not None:
        tenant = check_tenant(tenant)
    if role is Role.TENANT_ADMIN and tenant is None:
        raise Invalid("a tenant_admin token needs a tenant")
    if role is Role.OWNER and tenant is not None:
        raise Invalid("an owner token acts on every tenant: give no tenant")
    return tenant


async def create(
    plane: ControlPlane, role: Any, tenant: Any, name: Any, expires_at: Any = None
) -> tuple[str, AdminTokenInfo]:
    """A new admin token: (plaintext, shown once; its record)."""
    r = check_role(role)
    scope, label, exp = check_scope(r, tenant), check_name(name), check_expires_at(expires_at)
    plaintext = tid = ""

    async def body(pipe: Pipeline) -> AdminTokenInfo:
        if await pipe.exists(record_key(tid)):
            raise WatchError("id taken")  # astronomically rare: retry with a fresh id
        now = plane.clock()
        info = AdminTokenInfo(tid, label, r, scope, now, exp, False, None, plane.principal.id)
        pipe.multi()
        pipe.hset(record_key(tid), mapping=info.to_redis(keys.hash_key(plaintext)))
        pipe.sadd(TOKEN_SET, tid)
        queue_audit(pipe, plane.principal, "admin_token.create", f"admin_token:{tid}", None, info.audit_view(), now,
                    tenant=scope or "")  # fmt: skip
        return info

    def watched() -> list[str]:
        nonlocal plaintext, tid
        plaintext, tid = new_token()
        return [record_key(tid)]

    info = await plane._transact(watched, body)
    return plaintext, info


async def list_all(plane: ControlPlane) -> list[AdminTokenInfo]:
    tids = sorted(t.decode() for t in await plane.redis.smembers(TOKEN_SET))
    pipe = plane.redis.pipeline(transaction=False)
    for tid in tids:
        pipe.hgetall(record_key(tid))
    raws = await pipe.execute()
    infos = [AdminTokenInfo.from_redis(t, raw) for t, raw in zip(tids, raws, strict=True) if raw]
    return sorted(infos, key=lambda i: (i.created_at or 0.0, i.id))


async def get(plane: ControlPlane, tid: str) -> AdminTokenInfo:
    return await load_token(plane.redis, check_token_id(tid))


async def revoke(plane: ControlPlane, tid: str) -> AdminTokenInfo:
    """Revoke an admin token (idempotent); the very next request with it is refused."""
    check_token_id(tid)

    async def body(pipe: Pipeline) -> AdminTokenInfo:
        info = await load_token(pipe, tid)
        if info.revoked:
            return info
        now = plane.clock()
        after = replace(info, revoked=True, revoked_at=now)
        pipe.multi()
        queue_revoke_token(pipe, tid, now)
        queue_audit(pipe, plane.principal, "admin_token.revoke", f"admin_token:{tid}", info.audit_view(),
                    after.audit_view(), now, tenant=info.tenant or "")  # fmt: skip
        return after

    return await plane._transact(lambda: [record_key(tid)], body)

"""What the control plane shows about keys and tenants: never a key's hash or secret."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from sidegate.admin.controlplane.rules import NotFound
from sidegate.keystore import KeyRecord, TenantLimits, record_key

_NOT_AUDITED = frozenset({"status", "created_at", "revoked_at"})


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
    team: str = ""
    """The team the key belongs to ("" = none; a user's key: its user's team, see ``user``)."""
    user: str = ""

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
            "team": self.team or None,
            "user": self.user or None,
        }

    def audit_view(self) -> dict[str, Any]:
        """The audit log's before/after view: :meth:`to_dict` without the status (it depends on when it
        is read) and the creation and revocation times (the entry's own time says when)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_AUDITED}

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
            team=rec.team,
            user=rec.user,
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


async def load_key(r: Redis | Pipeline, kid: str) -> KeyInfo:
    """A key's record (in a WATCHed pipeline too: its commands run at once), or NotFound."""
    raw = await r.hgetall(record_key(kid))
    if not raw:
        raise NotFound(f"no key with id {kid}")
    return KeyInfo.from_redis(kid, raw)

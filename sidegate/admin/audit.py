"""The audit log: every control-plane change (who, what, before/after, when, from where) as one
entry of the store's ``sg:audit`` stream, appended in the same MULTI/EXEC as the change itself, so
a change without its entry (or the reverse) cannot happen.

The stream is durable: it is never trimmed by Sidegate (no MAXLEN on XADD). An entry takes ~300
bytes of store memory for a key or limits change (docs/control-plane.md, "Audit log"), so 1 000
changes a day grow it by ~0.3 MB a day. To bound it, archive
(`sidegate admin audit export -o FILE`, the ledger export's JSON-lines format) and then trim what is
archived (`sidegate admin audit trim --before TIME`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from sidegate.admin.principal import Principal
from sidegate.store.layout import CONFIG_PREFIX

AUDIT_STREAM = CONFIG_PREFIX + "audit"
MAX_QUERY_LIMIT = 1000
MAX_SCANNED = 100_000
"""A query reads at most this many entries (newest first) looking for matches: bounded work per call."""


def _tenant_of(target: str, before: Any, after: Any) -> str:
    """The tenant a change concerns, from its views (``tenant`` field) or its target
    (``tenant:<name>``, ``<kind>:<tenant>/<name>``); "" when it concerns no single tenant."""
    for view in (after, before):
        if isinstance(view, dict) and isinstance(view.get("tenant"), str):
            return str(view["tenant"])
    kind, _, rest = target.partition(":")
    if kind == "tenant":
        return rest
    if "/" in rest:
        return rest.split("/", 1)[0]
    return ""


def queue_audit(
    pipe: Pipeline,
    who: Principal,
    action: str,
    target: str,
    before: Any,
    after: Any,
    now: float,
    *,
    tenant: str | None = None,
) -> None:
    """Queue one entry on a MULTI pipeline. ``action`` is e.g. ``key.create``, ``team.limits``;
    ``target`` names the thing (``key:ab12cd34``, ``team:acme/ml``); before/after are JSON-able
    views (never a secret or a hash: :mod:`sidegate.admin.controlplane.views`). ``tenant`` (derived
    from the views or the target when not given) lets a tenant's admins read their tenant's entries."""
    pipe.xadd(
        AUDIT_STREAM,
        {
            "ts": repr(now),
            "actor": who.id,
            "role": who.role.value,
            "tenant_scope": who.tenant or "",
            "source": who.source,
            "action": action,
            "target": target,
            "tenant": _tenant_of(target, before, after) if tenant is None else tenant,
            "before": orjson.dumps(before),
            "after": orjson.dumps(after),
        },
    )


@dataclass(slots=True, frozen=True)
class AuditEntry:
    id: str
    ts: float
    actor: str
    role: str
    source: str
    action: str
    target: str
    tenant: str
    before: Any
    after: Any

    @classmethod
    def from_fields(cls, eid: str, f: dict[bytes, bytes]) -> AuditEntry:
        def s(name: bytes) -> str:
            return f.get(name, b"").decode("utf-8", "replace")

        return cls(
            id=eid,
            ts=float(f.get(b"ts", b"0") or 0),
            actor=s(b"actor"),
            role=s(b"role"),
            source=s(b"source"),
            action=s(b"action"),
            target=s(b"target"),
            tenant=s(b"tenant"),
            before=orjson.loads(f.get(b"before", b"null") or b"null"),
            after=orjson.loads(f.get(b"after", b"null") or b"null"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "actor": self.actor,
            "role": self.role,
            "source": self.source,
            "action": self.action,
            "target": self.target,
            "tenant": self.tenant or None,
            "before": self.before,
            "after": self.after,
        }

    def json_line(self) -> str:
        """The ledger export's JSON-lines form (``id`` = stream id, ``ts`` ISO-8601 UTC), marked
        ``"kind": "audit"`` so audit lines and usage records can share a file."""
        row = {"kind": "audit", **self.to_dict()}
        row["ts"] = datetime.fromtimestamp(self.ts, tz=UTC).isoformat(timespec="milliseconds")
        return orjson.dumps(row).decode() + "\n"


@dataclass(slots=True, frozen=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    tenant: str | None = None
    actor: str | None = None
    action: str | None = None
    """An exact action (``key.create``) or a kind prefix ending in ``.`` (``key.``)."""

    def matches(self, e: AuditEntry) -> bool:
        if self.tenant is not None and e.tenant != self.tenant:
            return False
        if self.actor is not None and e.actor != self.actor:
            return False
        if self.action is not None:
            if self.action.endswith("."):
                return e.action.startswith(self.action)
            return e.action == self.action
        return True


def _ms(t: float | None, default: str) -> str:
    return default if t is None else str(max(0, int(t * 1000)))


async def scan(
    redis: Redis,
    since: float | None = None,
    until: float | None = None,
    *,
    newest_first: bool,
    page: int = 500,
) -> AsyncIterator[AuditEntry]:
    """Entries whose stream time is within [since, until] (epoch s), oldest or newest first."""
    lo, hi = _ms(since, "-"), _ms(until, "+")
    while True:
        if newest_first:
            batch = await redis.xrevrange(AUDIT_STREAM, max=hi, min=lo, count=page)
        else:
            batch = await redis.xrange(AUDIT_STREAM, min=lo, max=hi, count=page)
        for eid, fields in batch:
            yield AuditEntry.from_fields(_text(eid), fields)
        if len(batch) < page:
            return
        last = _text(batch[-1][0])
        if newest_first:
            hi = "(" + last
        else:
            lo = "(" + last


async def query(
    redis: Redis, q: AuditQuery, limit: int, visible: Any = None
) -> tuple[list[AuditEntry], bool]:
    """Matching entries, newest first, at most ``limit``; ``visible(tenant)`` filters what the
    caller may see. -> (entries, more: whether older matches may remain)."""
    out: list[AuditEntry] = []
    scanned = 0
    async for e in scan(redis, q.since, q.until, newest_first=True):
        scanned += 1
        if scanned > MAX_SCANNED:
            return out, True
        if not q.matches(e) or (visible is not None and not visible(e.tenant)):
            continue
        if len(out) == limit:
            return out, True
        out.append(e)
    return out, False


async def export_jsonl(
    redis: Redis, out: TextIO, since: float | None = None, group: str | None = None, *, page: int = 500
) -> int:
    """Write audit entries oldest first as JSON lines (:meth:`AuditEntry.json_line`). With ``group``
    (a consumer group, created at ``since`` on first use), only the entries that group has not
    acknowledged yet, acknowledged once written: repeated runs export each entry once, as the
    ledger's ``usage export --group`` does. Returns the number written."""
    if group is None:
        n = 0
        async for e in scan(redis, since, None, newest_first=False, page=page):
            out.write(e.json_line())
            n += 1
        return n
    try:
        await redis.xgroup_create(AUDIT_STREAM, group, id=_ms(since, "0"), mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    n, cursor = 0, "0"  # first our own pending entries (a run that died before XACK), then new ones
    while True:
        resp = await redis.xreadgroup(group, "export", {AUDIT_STREAM: cursor}, count=page)
        batch = resp[0][1] if resp else []
        if not batch:
            if cursor == ">":
                return n
            cursor = ">"
            continue
        for eid, fields in batch:
            if fields:  # a pending entry trimmed away since has no fields
                out.write(AuditEntry.from_fields(_text(eid), fields).json_line())
                n += 1
        out.flush()
        await redis.xack(AUDIT_STREAM, group, *[eid for eid, _ in batch])
        if cursor == "0":
            cursor = _text(batch[-1][0])


async def trim_before(redis: Redis, before: float, who: Principal, now: float) -> int:
    """Delete the entries older than ``before`` (epoch s), after archiving them; the trim itself is
    recorded (``audit.trim``) in the same transaction. Returns how many entries went."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xtrim(AUDIT_STREAM, minid=_ms(before, "0"), approximate=False)
        queue_audit(pipe, who, "audit.trim", "audit", None, {"before": before}, now, tenant="")
        deleted, _ = await pipe.execute()
    return int(deleted)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v

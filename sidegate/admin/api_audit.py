"""The admin API's audit log query: ``GET /admin/v1/audit``.

Owners (and global viewers) read every entry; a tenant_admin or a viewer of one tenant reads that
tenant's entries only (changes to its keys, limits, teams, users and viewer tokens), never the
entries that concern no single tenant (other admins' tokens, for instance).
"""

from __future__ import annotations

from aiohttp import web

from sidegate.admin import audit
from sidegate.admin import controlplane as cp
from sidegate.admin.http import CP_KEY, principal, respond
from sidegate.admin.openapi import PREFIX
from sidegate.admin.policy import guard, query
from sidegate.features.ledger.reading import since_to_id

DEFAULT_LIMIT = 100
_PARAMS = ("since", "until", "tenant", "actor", "action", "limit")


def parse_time(text: str, what: str) -> float:
    """Epoch seconds, an ISO-8601 date/time, or a duration back from now (``90m``, ``24h``, ``7d``):
    the CLI's friendly forms (the API takes Unix seconds)."""
    try:
        ms = since_to_id(text)
    except ValueError as exc:
        raise cp.Invalid(f"{what}: {exc}") from None
    return int(ms.split("-", 1)[0]) / 1000


def _unix_time(text: str, what: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise cp.Invalid(f"{what} must be Unix time in seconds") from None
    if not 0 <= t <= cp.MAX_EXPIRES_AT:  # also refuses nan and inf
        raise cp.Invalid(f"{what} must be Unix time in seconds, from 0 to {cp.MAX_EXPIRES_AT:.0f}")
    return t


def _text(params: dict[str, str], name: str, max_len: int) -> str | None:
    value = params.get(name)
    if value is not None and len(value) > max_len:
        raise cp.Invalid(f"{name} must be at most {max_len} characters")
    return value


def audit_query(params: dict[str, str]) -> tuple[audit.AuditQuery, int]:
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise cp.Invalid(f"unknown parameter(s): {', '.join(unknown)}; known: {', '.join(_PARAMS)}")
    raw_limit = params.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= audit.MAX_QUERY_LIMIT:
        raise cp.Invalid(f"limit must be an integer from 1 to {audit.MAX_QUERY_LIMIT}")
    tenant = params.get("tenant")
    q = audit.AuditQuery(
        since=_unix_time(params["since"], "since") if "since" in params else None,
        until=_unix_time(params["until"], "until") if "until" in params else None,
        tenant=cp.check_tenant(tenant) if tenant is not None else None,
        actor=_text(params, "actor", 200),
        action=_text(params, "action", 100),
    )
    return q, int(raw_limit)


@guard("read", query("tenant"))
async def get_audit(request: web.Request) -> web.Response:
    q, limit = audit_query(dict(request.query))
    plane = request.app[CP_KEY]
    entries, more = await audit.query(plane.redis, q, limit, principal(request).sees)
    return respond({"entries": [e.to_dict() for e in entries], "more": more})


def register(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/audit", get_audit)

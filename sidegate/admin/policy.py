"""Who may call which admin route: every route declares its policy, the middleware enforces it.

A policy is the route's :data:`~sidegate.admin.principal.Action` (read / write / owner) and where the
request names the tenant it acts on (:class:`TenantFrom`): a path segment, a query parameter, a body
field, the record of a key or admin token named in the path, or no single tenant (``GLOBAL``:
listings, which the handler filters with ``Principal.sees``, and owner-wide things). The middleware
(:mod:`sidegate.admin.server`) resolves the tenant and answers 403 unless
``principal.may(action, tenant)``, before the handler runs: a route cannot forget its check, and a
route with no declared policy is for owners only (fail closed; the tests fail until it declares
one). The role-matrix test walks ``app.router.routes()`` and derives each route's expected outcome
for each role from the same declaration. A handler may still narrow further (``http.require``, or
the admin-token delegation rule), never widen.

Declare with the decorator on the handler::

    @guard("write", tenant=path("name"))
    async def put_limits(request): ...

or, for a route whose handler cannot carry an attribute (static files), ``declare(app, route, policy)``.
``PUBLIC`` routes need no credential (health, the OpenAPI document, the console's static assets).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from sidegate.admin.controlplane.token_store import token_record_key
from sidegate.admin.http import CP_KEY
from sidegate.admin.principal import Action
from sidegate.keystore import record_key

Where = Literal["global", "every", "path", "query", "body", "key", "admin_token"]


@dataclass(slots=True, frozen=True)
class TenantFrom:
    """Where a request names its tenant: ``where`` (see :data:`Where`) and the parameter's name."""

    where: Where
    field: str = ""


GLOBAL = TenantFrom("global")
EVERY_TENANT = "*"
"""The tenant of a thing that concerns every tenant (never a valid tenant name, so only unscoped
principals pass ``may(action, EVERY_TENANT)``)."""
EVERY = TenantFrom("every")
"""A thing shared by every tenant that no tenant-scoped role may see either (the routing document:
providers, models, prices): the request acts on :data:`EVERY_TENANT`."""


def path(field: str = "name") -> TenantFrom:
    return TenantFrom("path", field)


def query(field: str = "tenant") -> TenantFrom:
    """Optional: absent = every tenant the caller sees (the handler filters)."""
    return TenantFrom("query", field)


def body(field: str = "tenant") -> TenantFrom:
    return TenantFrom("body", field)


def key_record(field: str = "key_id") -> TenantFrom:
    """The tenant of the key whose id is the path parameter ``field``."""
    return TenantFrom("key", field)


def admin_token_record(field: str = "token_id") -> TenantFrom:
    """The tenant of the admin token whose id is the path parameter ``field``."""
    return TenantFrom("admin_token", field)


@dataclass(slots=True, frozen=True)
class Policy:
    action: Action | None
    """None: a public route (no credential asked)."""
    tenant: TenantFrom = GLOBAL

    @property
    def public(self) -> bool:
        return self.action is None


PUBLIC = Policy(None)
UNDECLARED = Policy("owner")
"""What a route that declares no policy gets: owners only (the tests fail until it declares one)."""
_ATTR = "__sidegate_policy__"
POLICIES: web.AppKey[dict[int, Policy]] = web.AppKey("policies", dict)
"""Policies declared per route (by ``id(route)``) for routes whose handler carries none."""

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


def guard(action: Action | None, tenant: TenantFrom = GLOBAL) -> Callable[[H], H]:
    """Declare the policy of the routes served by the decorated handler."""

    def mark(handler: H) -> H:
        setattr(handler, _ATTR, Policy(action, tenant))
        return handler

    return mark


def public(handler: H) -> H:
    return guard(None)(handler)


def declare(app: web.Application, route: AbstractRoute, policy: Policy) -> None:
    if POLICIES not in app:
        app[POLICIES] = {}
    app[POLICIES][id(route)] = policy


def policy_of(app: web.Application, route: AbstractRoute) -> Policy | None:
    """The route's declared policy (HEAD routes aiohttp adds beside a GET share its handler)."""
    declared = app.get(POLICIES, {}).get(id(route))
    if declared is not None:
        return declared
    pol = getattr(route.handler, _ATTR, None)
    return pol if isinstance(pol, Policy) else None


class _Unreadable:
    """A body that names no usable tenant: the handler answers it with 400."""


async def resolve_tenant(request: web.Request, where: TenantFrom) -> str | None:
    """The tenant the request acts on, per its policy; None = no single tenant (or not found/unreadable:
    the handler then answers 400/404, never acting on another tenant)."""
    if where.where == "global":
        return None
    if where.where == "every":
        return EVERY_TENANT
    if where.where == "path":
        return request.match_info.get(where.field)
    if where.where == "query":
        return request.query.get(where.field)
    if where.where == "body":
        raw = await request.read()  # aiohttp keeps it: the handler reads it again
        try:
            data: Any = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return None
        value = data.get(where.field) if isinstance(data, dict) else None
        return value if isinstance(value, str) else None
    redis = _redis(request)
    ident = request.match_info.get(where.field, "")
    if where.where == "key":
        raw_tenant = await redis.hget(record_key(ident), "tenant")
        return raw_tenant.decode() if raw_tenant else None
    if where.where == "admin_token":
        raw_tenant = await redis.hget(token_record_key(ident), "tenant")
        if raw_tenant is None:
            return None
        # An unscoped token (an owner's, a global viewer's) concerns every tenant: only owners act on it.
        return raw_tenant.decode() or EVERY_TENANT
    raise AssertionError(f"unknown tenant source {where.where}")


def _redis(request: web.Request) -> Any:
    return request.app[CP_KEY].redis

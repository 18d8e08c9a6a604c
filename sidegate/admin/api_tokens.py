"""The admin API's admin-token endpoints, and ``whoami``.

Owners manage every admin token. A tenant_admin may delegate read-only access: it may create,
list and revoke ``viewer`` tokens of its own tenant, and nothing else (never a token that sees more
than it does, nor another admin's token).
"""

from __future__ import annotations

import logging

from aiohttp import web

from sidegate.admin import tokens
from sidegate.admin.controlplane import check_tenant
from sidegate.admin.http import Forbidden, body, control, principal, respond
from sidegate.admin.openapi import PREFIX
from sidegate.admin.policy import GLOBAL, admin_token_record, guard, query
from sidegate.admin.policy import body as in_body
from sidegate.admin.principal import Principal, Role

log = logging.getLogger("sidegate.admin")


def _check_delegation(who: Principal, role: Role, tenant: str | None) -> None:
    """Whether ``who`` may hold power over a ``role`` token of ``tenant`` (create or revoke it)."""
    if who.role is Role.OWNER:
        return
    if who.role is Role.TENANT_ADMIN and role is Role.VIEWER and tenant is not None and tenant == who.tenant:
        return
    raise Forbidden(f"the {who.role.value} role may only manage viewer tokens of its own tenant")


@guard("read", GLOBAL)
async def whoami(request: web.Request) -> web.Response:
    who = principal(request)
    return respond({"id": who.id, "role": who.role.value, "tenant": who.tenant})


@guard("write", in_body("tenant"))
async def create_token(request: web.Request) -> web.Response:
    data = await body(request, True, ("role", "tenant", "name", "expires_at"))
    for field in ("role", "name"):
        if field not in data:
            raise tokens.Invalid(f"{field} is required")
    role = tokens.check_role(data["role"])
    tenant = tokens.check_scope(role, data.get("tenant"))
    _check_delegation(principal(request), role, tenant)
    plaintext, info = await tokens.create(
        control(request), role, tenant, data["name"], data.get("expires_at")
    )
    log.info("created admin token %s (%s)", info.id, info.role.value)
    return respond({"token": plaintext, "record": info.to_dict(control(request).clock())}, 201)


@guard("write", query("tenant"))
async def list_tokens(request: web.Request) -> web.Response:
    tenant = request.query.get("tenant")
    if tenant is not None:
        check_tenant(tenant)
    who = principal(request)
    now = control(request).clock()
    infos = [
        i
        for i in await tokens.list_all(control(request))
        if (tenant is None or i.tenant == tenant) and (who.tenant is None or i.tenant == who.tenant)
    ]
    return respond({"tokens": [i.to_dict(now) for i in infos]})


@guard("write", admin_token_record("token_id"))
async def get_token(request: web.Request) -> web.Response:
    info = await tokens.get(control(request), request.match_info["token_id"])
    return respond(info.to_dict(control(request).clock()))


@guard("write", admin_token_record("token_id"))
async def revoke_token(request: web.Request) -> web.Response:
    plane = control(request)
    info = await tokens.get(plane, request.match_info["token_id"])
    _check_delegation(principal(request), info.role, info.tenant)
    info = await tokens.revoke(plane, info.id)
    log.info("revoked admin token %s", info.id)
    return respond(info.to_dict(control(request).clock()))


def register(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/whoami", whoami)
    r.add_get(f"{PREFIX}/admin-tokens", list_tokens)
    r.add_post(f"{PREFIX}/admin-tokens", create_token)
    r.add_get(f"{PREFIX}/admin-tokens/{{token_id}}", get_token)
    r.add_post(f"{PREFIX}/admin-tokens/{{token_id}}/revoke", revoke_token)

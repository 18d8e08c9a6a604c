"""The admin API's key and tenant endpoints (the control plane's core operations).

Who may call them (declared on each handler, enforced by the middleware: sidegate/admin/policy.py):
keys are read by every role of their tenant and changed by owners and their tenant's admins; a
tenant's limits likewise; creating (PUT) and deleting a tenant is for owners only. Listings show
what the caller's role sees.
"""

from __future__ import annotations

import logging

from aiohttp import web

from sidegate.admin import controlplane as cp
from sidegate.admin.http import body, control, key_id_param, principal, respond, tenant_param
from sidegate.admin.openapi import PREFIX
from sidegate.admin.policy import GLOBAL, guard, key_record, path, query
from sidegate.admin.policy import body as in_body

log = logging.getLogger("sidegate.admin")


@guard("read", query("tenant"))
async def list_keys(request: web.Request) -> web.Response:
    tenant = request.query.get("tenant")
    who = principal(request)
    infos = [i for i in await control(request).list_keys(tenant) if who.sees(i.tenant)]
    return respond({"keys": [i.to_dict() for i in infos]})


@guard("write", in_body("tenant"))
async def create_key(request: web.Request) -> web.Response:
    data = await body(request, True, ("tenant", "models", "expires_at", "team", "user"))
    if "tenant" not in data:
        raise cp.Invalid("tenant is required")
    key, info = await control(request).create_key(
        data["tenant"],
        data.get("models", ["*"]),
        data.get("expires_at"),
        team=data.get("team"),
        user=data.get("user"),
    )
    log.info("created key %s for tenant %s", info.id, info.tenant)
    return respond({"key": key, "record": info.to_dict()}, 201)


@guard("read", key_record("key_id"))
async def get_key(request: web.Request) -> web.Response:
    return respond((await control(request).get_key(key_id_param(request))).to_dict())


@guard("write", key_record("key_id"))
async def revoke_key(request: web.Request) -> web.Response:
    info = await control(request).revoke_key(key_id_param(request))
    log.info("revoked key %s", info.id)
    return respond(info.to_dict())


@guard("write", key_record("key_id"))
async def rotate_key(request: web.Request) -> web.Response:
    kid = key_id_param(request)
    data = await body(request, False, ("overlap_s", "expires_at"))
    rot = await control(request).rotate_key(
        kid, data.get("overlap_s", cp.DEFAULT_OVERLAP_S), data.get("expires_at")
    )
    log.info("rotated key %s -> %s", rot.old.id, rot.new.id)
    return respond({"key": rot.key, "record": rot.new.to_dict(), "previous": rot.old.to_dict()}, 201)


@guard("read", GLOBAL)
async def list_tenants(request: web.Request) -> web.Response:
    who = principal(request)
    tenants = [t for t in await control(request).list_tenants() if who.sees(t.name)]
    return respond({"tenants": [t.to_dict() for t in tenants]})


@guard("read", path("name"))
async def get_tenant(request: web.Request) -> web.Response:
    return respond((await control(request).get_tenant(tenant_param(request))).to_dict())


@guard("owner", path("name"))
async def put_tenant(request: web.Request) -> web.Response:
    name = tenant_param(request)
    data = await body(request, False, ("limits",))
    limits = cp.check_limits(data["limits"]) if "limits" in data else None
    info, created = await control(request).create_tenant(name, limits)
    log.info("%s tenant %s", "created" if created else "updated", name)
    return respond(info.to_dict(), 201 if created else 200)


@guard("owner", path("name"))
async def delete_tenant(request: web.Request) -> web.Response:
    name = tenant_param(request)
    revoked = await control(request).delete_tenant(name)
    log.info("deleted tenant %s (%d keys revoked)", name, revoked)
    return respond({"name": name, "revoked_keys": revoked})


# The tenant's own limits are the ceiling its owner sets (a tenant_admin raising them would undo a
# budget); inside them, a tenant_admin sets its teams' and users' limits (sidegate/admin/api_org.py).
@guard("owner", path("name"))
async def put_limits(request: web.Request) -> web.Response:
    name = tenant_param(request)
    limits = cp.check_limits(await body(request, True, cp.LIMIT_FIELDS))
    info = await control(request).set_limits(name, limits)
    log.info("set limits of tenant %s", name)
    return respond(info.to_dict())


def register(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/keys", list_keys)
    r.add_post(f"{PREFIX}/keys", create_key)
    r.add_get(f"{PREFIX}/keys/{{key_id}}", get_key)
    r.add_post(f"{PREFIX}/keys/{{key_id}}/revoke", revoke_key)
    r.add_post(f"{PREFIX}/keys/{{key_id}}/rotate", rotate_key)
    r.add_get(f"{PREFIX}/tenants", list_tenants)
    r.add_get(f"{PREFIX}/tenants/{{name}}", get_tenant)
    r.add_put(f"{PREFIX}/tenants/{{name}}", put_tenant)
    r.add_delete(f"{PREFIX}/tenants/{{name}}", delete_tenant)
    r.add_put(f"{PREFIX}/tenants/{{name}}/limits", put_limits)

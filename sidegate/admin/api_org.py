"""The admin API's team and user endpoints: ``/admin/v1/tenants/{name}/teams[/{team}]`` and
``.../users[/{user}]`` (reading needs ``read`` on the tenant, changing needs ``write``)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from sidegate.admin import controlplane as cp
from sidegate.admin.http import body, control, require, respond, tenant_param
from sidegate.admin.openapi import PREFIX
from sidegate.admin.policy import guard, path
from sidegate.admin.principal import Action
from sidegate.keystore import TenantLimits

log = logging.getLogger("sidegate.admin")


def _tenant(request: web.Request, action: Action) -> str:
    tenant = tenant_param(request)
    require(request, action, tenant)
    return tenant


def _write_target(request: web.Request, what: str) -> tuple[str, str]:
    """(tenant, the team's or user's name) of a write to ``.../{what}s/{what}``."""
    return _tenant(request, "write"), cp.check_member(request.match_info[what], what)


def _limits(data: dict[str, Any]) -> TenantLimits:
    return cp.check_limits(data["limits"]) if "limits" in data else TenantLimits()


def _put_answer(
    what: str, tenant: str, name: str, info: cp.TeamInfo | cp.UserInfo, created: bool
) -> web.Response:
    log.info("%s %s %s of tenant %s", "created" if created else "updated", what, name, tenant)
    return respond(info.to_dict(), 201 if created else 200)


def _delete_answer(what: str, tenant: str, name: str, revoked: int | None) -> web.Response:
    """``revoked`` None: there was no such team or user (not an error: the end state holds)."""
    if revoked is not None:
        log.info("deleted %s %s of tenant %s (%d keys revoked)", what, name, tenant, revoked)
    return respond(
        {"tenant": tenant, what: name, "existed": revoked is not None, "revoked_keys": revoked or 0}
    )


@guard("read", path("name"))
async def list_teams(request: web.Request) -> web.Response:
    tenant = _tenant(request, "read")
    return respond({"teams": [t.to_dict() for t in await control(request).list_teams(tenant)]})


@guard("read", path("name"))
async def get_team(request: web.Request) -> web.Response:
    tenant = _tenant(request, "read")
    return respond((await control(request).get_team(tenant, request.match_info["team"])).to_dict())


@guard("write", path("name"))
async def put_team(request: web.Request) -> web.Response:
    tenant, name = _write_target(request, "team")
    data = await body(request, False, ("limits", "models"))
    info, created = await control(request).put_team(tenant, name, _limits(data), data.get("models", ["*"]))
    return _put_answer("team", tenant, name, info, created)


@guard("write", path("name"))
async def delete_team(request: web.Request) -> web.Response:
    tenant, name = _write_target(request, "team")
    return _delete_answer("team", tenant, name, await control(request).delete_team(tenant, name))


@guard("read", path("name"))
async def list_users(request: web.Request) -> web.Response:
    tenant = _tenant(request, "read")
    return respond({"users": [u.to_dict() for u in await control(request).list_users(tenant)]})


@guard("read", path("name"))
async def get_user(request: web.Request) -> web.Response:
    tenant = _tenant(request, "read")
    return respond((await control(request).get_user(tenant, request.match_info["user"])).to_dict())


@guard("write", path("name"))
async def put_user(request: web.Request) -> web.Response:
    tenant, name = _write_target(request, "user")
    data = await body(request, False, ("team", "limits", "models"))
    info, created = await control(request).put_user(
        tenant, name, data.get("team"), _limits(data), data.get("models", ["*"])
    )
    return _put_answer("user", tenant, name, info, created)


@guard("write", path("name"))
async def delete_user(request: web.Request) -> web.Response:
    tenant, name = _write_target(request, "user")
    return _delete_answer("user", tenant, name, await control(request).delete_user(tenant, name))


def register(app: web.Application) -> None:
    r = app.router
    base = f"{PREFIX}/tenants/{{name}}"
    r.add_get(f"{base}/teams", list_teams)
    r.add_get(f"{base}/teams/{{team}}", get_team)
    r.add_put(f"{base}/teams/{{team}}", put_team)
    r.add_delete(f"{base}/teams/{{team}}", delete_team)
    r.add_get(f"{base}/users", list_users)
    r.add_get(f"{base}/users/{{user}}", get_user)
    r.add_put(f"{base}/users/{{user}}", put_user)
    r.add_delete(f"{base}/users/{{user}}", delete_user)

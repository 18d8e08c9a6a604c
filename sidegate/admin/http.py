"""What every admin API handler shares: JSON answers and errors, the request body's checks, who the
caller is (set by the authentication middleware) and the control plane acting as them."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from sidegate.admin import controlplane as cp
from sidegate.admin.principal import Action, Principal

CP_KEY: web.AppKey[cp.ControlPlane] = web.AppKey("controlplane", cp.ControlPlane)
SPEC_KEY: web.AppKey[bytes] = web.AppKey("spec", bytes)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
"""request[PRINCIPAL]: who the authentication middleware found the caller to be."""
_HEADERS = {"Cache-Control": "no-store"}


class Forbidden(cp.ControlPlaneError):
    status = 403
    code = "forbidden"


def respond(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers={**_HEADERS, **(headers or {})},
    )


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return respond({"error": {"code": code, "message": message}}, status, headers)


async def json_object(request: web.Request, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object, any fields (an empty body: {} unless required)."""
    raw = await request.read()  # aiohttp answers 413 past client_max_size
    if not raw.strip():
        if required:
            raise cp.Invalid("a JSON object body is required")
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise cp.Invalid("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise cp.Invalid("the body must be a JSON object")
    return data


async def body(request: web.Request, required: bool, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The body as a JSON object whose fields are all in `allowed`."""
    data = await json_object(request, required)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise cp.Invalid(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return data


def principal(request: web.Request) -> Principal:
    who: Principal = request[PRINCIPAL]
    return Principal(who.id, who.role, who.tenant, request.remote or "")


def control(request: web.Request) -> cp.ControlPlane:
    """The control plane acting as the request's principal (its changes are audited as theirs)."""
    return request.app[CP_KEY].acting(principal(request))


def key_id_param(request: web.Request) -> str:
    return cp.check_key_id(request.match_info["key_id"])


def tenant_param(request: web.Request) -> str:
    return cp.check_tenant(request.match_info["name"])


def require(request: web.Request, action: Action, tenant: str | None = None) -> Principal:
    """The caller, if they may do ``action`` on ``tenant``; else 403 (Forbidden)."""
    who = principal(request)
    if not who.may(action, tenant):
        where = f" on tenant {tenant}" if tenant else ""
        raise Forbidden(f"the {who.role.value} role may not {action}{where}")
    return who

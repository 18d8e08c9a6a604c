"""The role matrix: every route of the admin app x every kind of caller -> allowed or 403 (401 for
bad credentials), against a live admin API on a real Valkey.

Nothing here lists routes or outcomes by hand: the routes are whatever ``build_app`` registers
(``app.router.routes()``, so routes other modules add are covered as soon as they exist), and each
expected outcome comes from the route's declared policy (sidegate/admin/policy.py) and the role rules
(``Principal.may``). A request is built from the policy too: the tenant goes where the policy reads it
(path, query, body, or the record of a key / admin token created for the case), the body is the
OpenAPI document's example or its minimal required fields. "Allowed" means any answer but 401, 403
or 5xx (a 400 or 404 shows the request passed authorization).
"""

from __future__ import annotations

import copy
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import admin_roles_helpers as rh
import controlplane_helpers as h

from sidegate.admin.openapi import spec
from sidegate.admin.policy import EVERY_TENANT, Policy, policy_of
from sidegate.admin.principal import OWNER_ENV, Principal, Role
from sidegate.admin.server import build_app
from sidegate.config.admin import AdminConfig, OidcConfig

valkey_url = h.valkey_url
server = rh.server

A, B = "matrix-a", "matrix-b"
SPEC = spec()
_METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}


@dataclass(frozen=True)
class Caller:
    label: str
    who: Principal | None
    """None: the credential must be refused (401)."""
    kind: str
    """env | token | oidc | bad: how its credential is made."""


CALLERS = [
    Caller("owner env token", OWNER_ENV, "env"),
    Caller("owner token", Principal("", Role.OWNER), "token"),
    Caller("tenant_admin of A", Principal("", Role.TENANT_ADMIN, A), "token"),
    Caller("viewer of A", Principal("", Role.VIEWER, A), "token"),
    Caller("global viewer", Principal("", Role.VIEWER), "token"),
    Caller("oidc owner", Principal("", Role.OWNER), "oidc"),
    Caller("oidc tenant_admin of A", Principal("", Role.TENANT_ADMIN, A), "oidc"),
    Caller("oidc viewer of A", Principal("", Role.VIEWER, A), "oidc"),
    Caller("oidc global viewer", Principal("", Role.VIEWER), "oidc"),
]
BAD = [
    "revoked token",
    "expired token",
    "unknown token",
    "expired jwt",
    "jwt of another issuer",
    "wrong scheme",
]


def _routes() -> list[tuple[str, str, Policy | None]]:
    issuer = rh.Issuer()
    app = build_app(Redis(), "x", AdminConfig(oidc=OidcConfig(**issuer.config())))
    return [(r.method, r.resource.canonical, policy_of(app, r)) for r in app.router.routes()]  # type: ignore[union-attr]


ROUTES = _routes()


def _credential(server: rh.Server, caller: Caller) -> str:
    who = caller.who
    assert who is not None
    if caller.kind == "env":
        return f"Bearer {server.env_token}"
    if caller.kind == "token":
        return f"Bearer {server.new_token(who.role.value, who.tenant)['token']}"
    return f"Bearer {server.issuer.mint('matrix-user', who.role.value, who.tenant)}"


def _bad_credential(server: rh.Server, label: str) -> str:
    if label == "revoked token":
        made = server.new_token("viewer", A)
        with server.owner() as c:
            assert c.post(f"/admin-tokens/{made['record']['id']}/revoke").status_code == 200
        return f"Bearer {made['token']}"
    if label == "expired token":
        return f"Bearer {server.new_token('owner', expires_at=time.time() - 1)['token']}"
    if label == "unknown token":
        return "Bearer sga_zzzzzzzz_" + "x" * 43
    if label == "expired jwt":
        return f"Bearer {server.issuer.mint('m', 'owner', lifetime_s=-3600)}"
    if label == "jwt of another issuer":
        return f"Bearer {rh.Issuer(issuer='https://other.invalid/').mint('m', 'owner')}"
    return f"Basic {server.env_token}"


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _minimal(schema: dict[str, Any]) -> Any:
    """The schema's first example, else a value with only its required parts."""
    schema = _resolve(schema)
    if schema.get("examples"):
        return copy.deepcopy(schema["examples"][0])
    if "oneOf" in schema:
        return _minimal(schema["oneOf"][0])
    for k in ("const", "default"):
        if k in schema:
            return copy.deepcopy(schema[k])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {p: _minimal(props.get(p, {})) for p in schema.get("required", [])}
    return {"string": "matrix1", "integer": 1, "number": 1, "boolean": False, "array": [], "null": None}[kind]


def _request(server: rh.Server, method: str, path: str, policy: Policy, tenant: str) -> dict[str, Any]:
    """The request this route gets when aimed at ``tenant``, per its policy."""
    src = policy.tenant
    params: dict[str, str] = {}
    for name in re.findall(r"{(\w+)}", path):
        if src.field == name and src.where == "key":
            with server.owner() as c:
                value = c.post("/keys", json={"tenant": tenant}).json()["record"]["id"]
        elif src.field == name and src.where == "admin_token":
            value = server.new_token("viewer", tenant)["record"]["id"]
        elif (src.field == name and src.where == "path") or name in ("name", "tenant"):
            value = tenant
        else:
            value = "matrix1"
        path = path.replace(f"{{{name}}}", value)
    if src.where == "query":
        params[src.field] = tenant
    # An absolute URL: a route outside /admin/v1 (the console's) is reached as registered.
    req: dict[str, Any] = {"method": method, "url": f"{server.base}{path}", "params": params}
    op = SPEC["paths"].get(_spec_path(path, method), {}).get(method.lower(), {})
    if method in _METHODS_WITH_BODY:
        body = (
            _minimal(op["requestBody"]["content"]["application/json"]["schema"])
            if "requestBody" in op
            else None
        )
        if src.where == "body":
            body = {**(body or {}), src.field: tenant}
        if body is not None:
            req["json"] = body
    return req


def _spec_path(path: str, method: str) -> str:
    return next((p for p in SPEC["paths"] if re.fullmatch(re.sub(r"{\w+}", "[^/]+", p), path)), path)


def _seed(server: rh.Server) -> None:
    with server.owner() as c:
        for t in (A, B):
            assert c.put(f"/tenants/{t}").status_code in (200, 201)


def test_every_route_declares_a_policy() -> None:
    missing = [f"{m} {p}" for m, p, pol in ROUTES if pol is None]
    assert not missing, f"declare a policy (sidegate/admin/policy.py guard) for: {missing}"


def test_public_routes_need_no_credential(server: rh.Server) -> None:
    public = [(m, p) for m, p, pol in ROUTES if pol is not None and pol.public and "{" not in p]
    assert ("GET", "/admin/v1/healthz") in public and ("GET", "/admin/v1/openapi.json") in public
    with server.client() as c:
        for method, path in public:
            # Never a 401 (a static directory may answer 403/404: it is still served without one).
            status = c.request(method, f"{server.base}{path}").status_code
            assert status != 401 and status < 500, (path, status)


def test_no_viewer_changes_anything() -> None:
    """Whatever the declarations, a route that is not a GET (or its HEAD) is never a `read`."""
    bad = [f"{m} {p}" for m, p, pol in ROUTES if pol and pol.action == "read" and m not in ("GET", "HEAD")]
    assert not bad, f"a change must be a write or owner action: {bad}"


@pytest.mark.timeout(240)
def test_role_matrix(server: rh.Server) -> None:
    """Every (route, caller, tenant A or B) -> the outcome its policy and role give."""
    wrong: list[str] = []
    cases = 0
    creds: dict[str, str] = {}
    _seed(server)
    for method, path, policy in ROUTES:
        if policy is None or policy.public:
            continue
        targets = [A] if policy.tenant.where in ("global", "every") else [A, B]
        for caller in CALLERS:
            for tenant in targets:
                req = _request(server, method, path, policy, tenant)
                where = policy.tenant.where
                scope = None if where == "global" else EVERY_TENANT if where == "every" else tenant
                assert caller.who is not None and policy.action is not None
                allowed = caller.who.may(policy.action, scope)
                if caller.label not in creds:
                    creds[caller.label] = _credential(server, caller)
                with server.client(creds[caller.label]) as c:
                    status = c.request(**req).status_code
                cases += 1
                if method == "DELETE" and status < 300:
                    # A deletion (of tenant A: its admin tokens go too) must not change the next case.
                    _seed(server)
                    creds.clear()
                ok = (status not in (401, 403) and status < 500) if allowed else status == 403
                if not ok:
                    wrong.append(f"{caller.label} {method} {req['url']} (tenant {tenant}): {status}, "
                                 f"expected {'allowed' if allowed else '403'}")  # fmt: skip
    assert not wrong, "\n".join(wrong)
    assert cases >= 150


def test_bad_credentials_are_401_everywhere(server: rh.Server) -> None:
    creds = {label: _bad_credential(server, label) for label in BAD}
    wrong = []
    for method, path, policy in ROUTES:
        if policy is None or policy.public:
            continue
        _seed(server)
        req = _request(server, method, path, policy, A)
        for label, cred in creds.items():
            with server.client(cred) as c:
                resp = c.request(**req)
            if resp.status_code != 401 or (
                method != "HEAD" and resp.json()["error"]["code"] != "unauthorized"
            ):
                wrong.append(f"{label} {method} {req['url']}: {resp.status_code}")
    assert not wrong, "\n".join(wrong)
    assert server.env_token not in server.log()

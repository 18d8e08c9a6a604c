"""Admin roles without a store: the principal rules, admin token format and hashing, OIDC JWTs
mapped to principals (keys generated here, tokens minted with pyjwt), the declared route policies
and the audit entries' tenant."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest
from oidc_helpers import Issuer
from pydantic import ValidationError
from redis.asyncio import Redis

from sidegate import keys
from sidegate.admin import audit, tokens
from sidegate.admin.oidc import OidcRejected, OidcVerifier, looks_like_jwt
from sidegate.admin.policy import EVERY_TENANT, policy_of
from sidegate.admin.principal import OWNER_ENV, Principal, Role, cli_principal
from sidegate.admin.server import build_app
from sidegate.config.admin import AdminConfig, OidcConfig

ISSUER = Issuer()

# ---- principal rules ----

ADMIN_A = Principal("token:a", Role.TENANT_ADMIN, "a")
VIEWER_A = Principal("token:v", Role.VIEWER, "a")
VIEWER_ALL = Principal("token:g", Role.VIEWER, None)


@pytest.mark.parametrize(
    ("who", "action", "tenant", "allowed"),
    [
        (OWNER_ENV, "owner", "a", True),
        (OWNER_ENV, "write", EVERY_TENANT, True),
        (ADMIN_A, "write", "a", True),
        (ADMIN_A, "read", "a", True),
        (ADMIN_A, "write", "b", False),
        (ADMIN_A, "read", "b", False),
        (ADMIN_A, "owner", "a", False),
        (ADMIN_A, "write", EVERY_TENANT, False),
        (ADMIN_A, "read", None, True),  # a listing, filtered by sees()
        (VIEWER_A, "read", "a", True),
        (VIEWER_A, "read", "b", False),
        (VIEWER_A, "write", "a", False),
        (VIEWER_ALL, "read", "b", True),
        (VIEWER_ALL, "write", "b", False),
        (VIEWER_ALL, "owner", None, False),
    ],
)
def test_principal_may(who: Principal, action: Any, tenant: str | None, allowed: bool) -> None:
    assert who.may(action, tenant) is allowed


def test_principal_sees_and_cli() -> None:
    assert ADMIN_A.sees("a") and not ADMIN_A.sees("b") and not ADMIN_A.sees("")
    assert VIEWER_ALL.sees("b") and OWNER_ENV.sees("")
    cli = cli_principal()
    assert cli.id.startswith("cli:") and cli.role is Role.OWNER and cli.source == "local"


# ---- admin tokens ----


def test_token_format_hash_and_verify() -> None:
    token, tid = tokens.new_token()
    assert token.startswith("sga_") and tokens.token_id(token) == tid and len(tid) == 8
    assert tokens.token_id(token.replace("sga_", "sgk_", 1)) is None  # a tenant key is no admin token
    assert keys.key_id(token) is None  # and the reverse
    stored = keys.hash_key(token)
    assert keys.verify(token, stored) and not keys.verify(token + "x", stored)
    assert token.split("_", 2)[2] not in stored
    assert keys.hash_key(token, b"pepper") != stored


def test_token_scope_rules() -> None:
    assert tokens.check_scope(Role.VIEWER, None) is None
    assert tokens.check_scope(Role.TENANT_ADMIN, "acme") == "acme"
    with pytest.raises(tokens.Invalid):
        tokens.check_scope(Role.TENANT_ADMIN, None)
    with pytest.raises(tokens.Invalid):
        tokens.check_scope(Role.OWNER, "acme")
    with pytest.raises(tokens.Invalid):
        tokens.check_role("root")
    with pytest.raises(tokens.Invalid):
        tokens.check_name("")


class _FakeRedis:
    def __init__(self, records: dict[str, dict[bytes, bytes]]) -> None:
        self.records = records

    async def hgetall(self, name: str) -> dict[bytes, bytes]:
        return self.records.get(name, {})


def test_token_authenticate() -> None:
    token, tid = tokens.new_token()
    info = tokens.AdminTokenInfo(tid, "ci", Role.TENANT_ADMIN, "acme", 100.0, 500.0, False, None, "env")
    raw = {k.encode(): v.encode() for k, v in info.to_redis(keys.hash_key(token)).items()}
    r: Any = _FakeRedis({tokens.record_key(tid): raw})

    def auth(t: str, now: float = 200.0) -> Principal | None:
        return asyncio.run(tokens.authenticate(r, t, now))

    assert auth(token) == Principal(f"token:{tid}", Role.TENANT_ADMIN, "acme")
    assert auth(token, now=500.0) is None  # expired
    assert auth(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # wrong secret
    other, _ = tokens.new_token()
    assert auth(other) is None  # unknown id
    raw[b"revoked"] = b"1"
    assert auth(token) is None


# ---- OIDC ----


def _verifier(**extra: Any) -> OidcVerifier:
    return OidcVerifier(OidcConfig(**ISSUER.config(**extra)))


def _principal(v: OidcVerifier, token: str) -> Principal:
    return asyncio.run(v.principal(token))


def _rejected(v: OidcVerifier, token: str) -> int:
    with pytest.raises(OidcRejected) as exc:
        _principal(v, token)
    return exc.value.status


def test_oidc_maps_roles_and_tenants() -> None:
    v = _verifier()
    tok = ISSUER.mint("alice", "owner", "ignored")
    assert looks_like_jwt(tok)
    assert _principal(v, tok) == Principal("oidc:alice", Role.OWNER, None)
    assert _principal(v, ISSUER.mint("bob", "tenant_admin", "acme")) == Principal(
        "oidc:bob", Role.TENANT_ADMIN, "acme"
    )
    assert _principal(v, ISSUER.mint("carol", "viewer", alg="ES256")) == Principal("oidc:carol", Role.VIEWER)
    assert _principal(v, ISSUER.mint("dan", ["viewer", "tenant_admin"], "acme")).role is Role.TENANT_ADMIN
    assert _rejected(v, ISSUER.mint("eve", "tenant_admin")) == 403  # no tenant claim
    assert _rejected(v, ISSUER.mint("eve", None)) == 403  # no role
    assert _rejected(v, ISSUER.mint("eve", "root")) == 403


def test_oidc_unusable_tenant_claim_is_refused_not_widened() -> None:
    """A tenant claim that is present but not one tenant's name (a list, a number, "", "*") must not
    make a viewer a viewer of every tenant (fail closed): only an absent claim means every tenant."""
    v = _verifier()
    for bad in (["acme"], ["acme", "globex"], 7, "", "*", "acme/ml", {"name": "acme"}):
        assert _rejected(v, ISSUER.mint("eve", "viewer", sidegate_tenant=bad)) == 403, bad
        assert _rejected(v, ISSUER.mint("eve", "tenant_admin", sidegate_tenant=bad)) == 403, bad
    assert _principal(v, ISSUER.mint("eve", "viewer")) == Principal("oidc:eve", Role.VIEWER, None)
    owner = ISSUER.mint("ann", "owner", sidegate_tenant=["x"])
    assert _principal(v, owner).tenant is None  # owners act on every tenant


def test_oidc_role_map() -> None:
    v = _verifier(role_claim="groups", role_map={"gw-admins": "owner", "gw-readers": "viewer"})
    assert _principal(v, ISSUER.mint("a", None, groups=["staff", "gw-readers"])).role is Role.VIEWER
    assert _principal(v, ISSUER.mint("a", None, groups=["gw-readers", "gw-admins"])).role is Role.OWNER
    assert _rejected(v, ISSUER.mint("a", None, groups=["owner"])) == 403  # only mapped values count


def test_oidc_refuses_invalid_tokens() -> None:
    v = _verifier()
    assert _rejected(v, ISSUER.mint(lifetime_s=-120)) == 401  # expired beyond the leeway
    assert _rejected(v, ISSUER.mint(aud="another-app")) == 401
    assert _rejected(v, ISSUER.mint(iss="https://evil.invalid/")) == 401
    assert _rejected(v, ISSUER.mint(kid="unknown")) == 401
    assert _rejected(v, Issuer().mint()) == 401  # signed by another key under a known kid
    hs = jwt.encode({"iss": ISSUER.issuer, "aud": ISSUER.audience, "sub": "x", "exp": 2**31, "sidegate_role": "owner"},
                    "a-shared-secret-of-32-bytes-or-more!", algorithm="HS256", headers={"kid": "rsa1"})  # fmt: skip
    assert _rejected(v, hs) == 401
    assert _rejected(v, "eyJ.not.jwt") == 401
    no_exp = jwt.encode({"iss": ISSUER.issuer, "aud": ISSUER.audience, "sub": "x", "sidegate_role": "owner"},
                        ISSUER.rsa_key, algorithm="RS256", headers={"kid": "rsa1"})  # fmt: skip
    assert _rejected(v, no_exp) == 401


def test_oidc_remote_jwks_cache() -> None:
    calls: list[int] = []
    state: dict[str, Any] = {"fail": True, "jwks": ISSUER.jwks()}
    now = [1000.0]

    async def fetch() -> Any:
        calls.append(1)
        if state["fail"]:
            raise OSError("connection refused")
        return state["jwks"]

    cfg = OidcConfig(**ISSUER.config(jwks_url="https://idp.test.invalid/jwks", jwks_min_refresh_s=30))
    v = OidcVerifier(cfg, fetch=fetch, clock=lambda: now[0])

    async def run() -> None:
        with pytest.raises(OidcRejected) as exc:
            await v.principal(ISSUER.mint())
        assert exc.value.status == 503 and "jwks" in str(exc.value) and len(calls) == 1
        with pytest.raises(OidcRejected):  # no refetch storm: at most one try per jwks_min_refresh_s
            await v.principal(ISSUER.mint())
        assert len(calls) == 1
        state["fail"] = False
        now[0] += 31
        assert (await v.principal(ISSUER.mint("z"))).id == "oidc:z" and len(calls) == 2
        assert (await v.principal(ISSUER.mint("z"))).id == "oidc:z" and len(calls) == 2  # cached
        state["fail"] = True
        now[0] += 31
        with pytest.raises(OidcRejected) as exc:  # unknown kid: one refetch, which fails; old keys kept
            await v.principal(ISSUER.mint(kid="new"))
        assert exc.value.status == 401 and len(calls) == 3
        assert (await v.principal(ISSUER.mint("z"))).id == "oidc:z"
        # A burst of tokens with a new kid waits for one fetch, not one each.
        now[0] += 31
        state["fail"] = False
        results = await asyncio.gather(
            *(v.principal(ISSUER.mint(kid="new")) for _ in range(5)), return_exceptions=True
        )
        assert len(calls) == 4 and all(isinstance(r, OidcRejected) for r in results)

    asyncio.run(run())


def test_oidc_config_rules(tmp_path: Any) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        OidcConfig(issuer="i", audiences=["a"])
    with pytest.raises(ValidationError, match="exactly one"):
        OidcConfig(issuer="i", audiences=["a"], jwks_url="https://x", jwks={"keys": []})
    with pytest.raises(ValidationError, match="asymmetric"):
        OidcConfig(**ISSUER.config(algorithms=["HS256"]))
    with pytest.raises(ValidationError, match="role_map"):
        OidcConfig(**ISSUER.config(role_map={"x": "root"}))
    f = tmp_path / "jwks.json"
    f.write_text(__import__("json").dumps(ISSUER.jwks()))
    v = OidcVerifier(OidcConfig(issuer=ISSUER.issuer, audiences=[ISSUER.audience], jwks_file=str(f)))
    assert _principal(v, ISSUER.mint("f")).id == "oidc:f"
    assert AdminConfig().oidc is None


# ---- route policies ----


def test_every_route_declares_a_policy() -> None:
    app = build_app(Redis(), "token", AdminConfig(oidc=OidcConfig(**ISSUER.config())))
    missing = [f"{r.method} {r.resource.canonical}" for r in app.router.routes() if policy_of(app, r) is None]
    assert not missing, f"routes without a declared policy (sidegate/admin/policy.py guard): {missing}"


# ---- audit entries ----


@pytest.mark.parametrize(
    ("target", "before", "after", "tenant"),
    [
        ("key:ab12cd34", None, {"id": "ab12cd34", "tenant": "acme"}, "acme"),
        ("tenant:acme", {"name": "acme"}, None, "acme"),
        ("team:acme/ml", None, {"name": "ml"}, "acme"),
        ("user:acme/bob", {"name": "bob"}, {"name": "bob"}, "acme"),
        ("admin_token:zz", None, {"tenant": None}, ""),
    ],
)
def test_audit_entry_tenant(target: str, before: Any, after: Any, tenant: str) -> None:
    assert audit._tenant_of(target, before, after) == tenant


def test_audit_query_matches() -> None:
    e = audit.AuditEntry("1-0", 5.0, "env", "owner", "::1", "key.create", "key:x", "acme", None, {})
    assert audit.AuditQuery().matches(e)
    assert audit.AuditQuery(action="key.").matches(e) and audit.AuditQuery(action="key.create").matches(e)
    assert not audit.AuditQuery(action="key.c").matches(e)
    assert not audit.AuditQuery(tenant="b").matches(e) and not audit.AuditQuery(actor="cli:x").matches(e)
    line = e.json_line()
    assert '"kind":"audit"' in line and '"ts":"1970-01-01T00:00:05.000+00:00"' in line


def test_undeclared_route_is_for_owners_only() -> None:
    """A route added without a policy fails closed: owners pass (they may do anything), others get 403."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def run() -> dict[str, int]:
        app = build_app(Redis(), "env-token", AdminConfig(oidc=OidcConfig(**ISSUER.config())))
        app.router.add_get("/admin/v1/undeclared", handler)
        out = {}
        async with TestClient(TestServer(app)) as c:
            for label, cred in (
                ("env", "env-token"),
                ("oidc owner", ISSUER.mint("o", "owner")),
                ("oidc tenant_admin", ISSUER.mint("t", "tenant_admin", "a")),
                ("oidc viewer", ISSUER.mint("v", "viewer")),
                ("none", ""),
            ):
                resp = await c.get("/admin/v1/undeclared", headers={"Authorization": f"Bearer {cred}"})
                out[label] = resp.status
            out["public"] = (await c.get("/admin/v1/openapi.json")).status
        return out

    assert asyncio.run(run()) == {"env": 200, "oidc owner": 200, "oidc tenant_admin": 403, "oidc viewer": 403,
                                  "none": 401, "public": 200}  # fmt: skip

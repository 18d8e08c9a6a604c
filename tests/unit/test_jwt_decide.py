"""The JWT callers' decision (sidegate/features/auth/jwt.py) from what Envoy's jwt_authn filed, and
its place in `authorize` beside the key check (throttle included)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidegate import keys
from sidegate.config import parse
from sidegate.errors import Api
from sidegate.features.auth.decide import Allow, Deny, authorize
from sidegate.features.auth.jwt import JwtCallers, header_value, namespace_from_headers, parse_header
from sidegate.features.auth.throttle import FailureThrottle
from sidegate.keystore import KeyRecord
from sidegate.wire import JWT_HEADER

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"  # any three-part bearer (Envoy verified it or not)


def _callers(**corp: Any) -> JwtCallers:
    p = {"issuer": "https://idp.test", "audiences": ["sg"], "jwks": {"file": "/jwks.json"},
         "claims": {"tenant": "org", "team": "grp.team", "user": "sub"}}  # fmt: skip
    p.update(corp)
    data = {
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K"}},
        "models": {"m": {"routes": [{"provider": "openai"}]}},
        "jwt": {"providers": {"corp": p, "fixed": {"issuer": "https://fixed.test", "audiences": ["sg"],
                                                   "jwks": {"file": "/j.json"}, "tenant": "globex", "models": ["m"]}}},
    }  # fmt: skip
    callers = JwtCallers.from_config(parse(data, env={}).jwt)
    assert callers is not None
    return callers


def _h(auth: str | None = "Bearer " + JWT, path: str = "/v1/chat/completions") -> dict[str, str]:
    return {":path": path, **({"authorization": auth} if auth else {})}


def _failed(*pairs: tuple[str, int, str]) -> dict[str, Any]:
    return {f"{name}:failed": {"code": code, "message": msg} for name, code, msg in pairs}


def test_a_verified_payload_gives_the_identity_from_its_claims():
    found = {"corp": {"org": "acme", "sub": "alice", "grp": {"team": "research"}}}
    got = _callers().decide(_h(), found)
    assert got == Allow(tenant="acme", key_id="jwt:corp", models=("*",), team="research", user="alice")


def test_url_like_claim_names_lists_and_numbers():
    callers = _callers(claims={"tenant": "https://example.com/org", "team": "groups", "user": "uid"})
    found = {"corp": {"https://example.com/org": "acme", "groups": ["ml", "ops"], "uid": 42}}
    got = callers.decide(_h(), found)
    assert isinstance(got, Allow) and (got.tenant, got.team, got.user) == ("acme", "ml", "42")


@pytest.mark.parametrize("user", ["a b", "x\r\nx-injected: 1", "é", "u" * 129])
def test_team_and_user_claims_must_be_plain_names(user):
    got = _callers().decide(_h(), {"corp": {"org": "acme", "sub": user}})
    assert isinstance(got, Deny) and got.status == 401 and got.reason == "jwt_bad_claim"
    assert b"user (claim 'sub')" in got.body and user.encode() not in got.body


def test_a_fixed_tenant_and_the_issuers_model_list():
    got = _callers().decide(_h(), {"fixed": {"sub": "x"}})
    assert got == Allow(tenant="globex", key_id="jwt:fixed", models=("m",), team="", user="")


@pytest.mark.parametrize(
    "payload", [{"sub": "a"}, {"org": "", "sub": "a"}, {"org": "no spaces allowed"}, {"org": {"x": 1}}]
)
def test_no_usable_tenant_is_401(payload):
    got = _callers().decide(_h(), {"corp": payload})
    assert isinstance(got, Deny) and got.status == 401 and got.reason == "jwt_no_tenant"
    assert b"tenant" in got.body and b"'org'" in got.body


@pytest.mark.parametrize(
    ("found", "reason", "says"),
    [
        (
            _failed(("corp", 3, "Jwt is expired"), ("fixed", 24, "Jwt issuer is not configured")),
            "jwt_expired",
            "expired",
        ),
        (_failed(("fixed", 24, "x"), ("corp", 2, "Jwt not yet valid")), "jwt_not_yet_valid", "not valid yet"),
        (_failed(("corp", 25, "Audiences in Jwt are not allowed")), "jwt_audience", "audience"),
        (_failed(("corp", 24, "x"), ("fixed", 24, "x")), "jwt_issuer", "issuer"),
        (_failed(("corp", 26, "Jwt verification fails")), "jwt_signature", "signature"),
        (
            _failed(("corp", 32, "Jwks doesn't have key to match kid or alg from Jwt")),
            "jwt_unknown_kid",
            "kid",
        ),
        (
            _failed(("corp", 6, "Jwt header is an invalid JSON"), ("fixed", 6, "x")),
            "jwt_malformed",
            "malformed",
        ),
        (_failed(("corp", 99, "Something new")), "jwt_unverified", "could not be verified"),
        (None, "jwt_unverified", "could not be verified"),  # (a JWT Envoy never looked at)
    ],
)
def test_a_refused_token_says_why_without_echoing_it(found, reason, says):
    got = _callers().decide(_h(), found)
    assert isinstance(got, Deny) and got.status == 401 and got.reason == reason
    body = json.loads(got.body)
    assert says in body["error"]["message"] and body["error"]["code"] == "invalid_api_key"
    assert JWT.encode() not in got.body


def test_unfetchable_keys_are_a_503():
    got = _callers().decide(_h(), _failed(("corp", 40, "Jwks remote fetch is failed")))
    assert isinstance(got, Deny) and got.status == 503 and got.reason == "jwks_unavailable"


def test_the_refusal_is_in_the_clients_format():
    got = _callers().decide(_h(path="/v1/messages"), _failed(("corp", 3, "Jwt is expired")))
    assert isinstance(got, Deny) and got.api is Api.ANTHROPIC
    assert json.loads(got.body)["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "headers",
    [
        _h(None),  # no credential: the key check says "missing"
        _h("Bearer sgk_abcdefgh_" + "x" * 40),  # a key (jwt_authn failed on it: ignored)
        _h("Bearer not-a-jwt"),  # neither: the key check says "incorrect"
        {":path": "/v1/messages", "x-api-key": "sgk_abcdefgh_" + "x" * 40},
    ],
)
def test_keys_and_non_tokens_are_left_to_the_key_check(headers):
    assert _callers().decide(headers, _failed(("corp", 4, "Jwt is not in the form"))) is None


def test_the_header_form_round_trips_and_envoys_dash_is_nothing():
    ns = {"corp": {"org": "acme"}}
    assert parse_header(header_value(ns)) == ns
    assert namespace_from_headers({JWT_HEADER: header_value(ns)}) == ns
    for v in (None, "", "v1 -", "v1 {bad", "v1 [1]"):
        assert parse_header(v) is None


def test_authorize_jwt_first_then_keys_and_failures_throttled():
    key, kid = keys.new_key()
    records = {kid: KeyRecord(id=kid, tenant="acme", hash=keys.hash_key(key))}
    throttle = FailureThrottle(max_failures=2, max_source_failures=2, block_s=60)
    callers = _callers()
    ok = authorize(_h(), records, throttle, "1.2.3.4", jwt=callers, jwt_found={"corp": {"org": "acme"}})
    assert isinstance(ok, Allow) and ok.key_id == "jwt:corp"
    as_key = authorize(
        _h("Bearer " + key), records, throttle, "1.2.3.4", jwt=callers, jwt_found=_failed(("corp", 4, "x"))
    )
    assert isinstance(as_key, Allow) and as_key.key_id == kid
    expired = _failed(("corp", 3, "Jwt is expired"))
    statuses = [
        authorize(_h(), records, throttle, "1.2.3.4", jwt=callers, jwt_found=expired).status for _ in range(3)
    ]
    assert statuses[0] == 401 and statuses[-1] == 429
    # no JWT callers configured: a findings header or namespace means nothing
    assert (
        authorize(
            _h(), records, FailureThrottle(), "5.6.7.8", jwt=None, jwt_found={"corp": {"org": "acme"}}
        ).status
        == 401
    )


def test_an_issuer_limited_to_its_tenants_refuses_a_claim_naming_another():
    callers = _callers(tenants=["acme"])
    ok = callers.decide(_h(), {"corp": {"org": "acme", "sub": "alice"}})
    assert isinstance(ok, Allow) and ok.tenant == "acme"
    no = callers.decide(_h(), {"corp": {"org": "globex", "sub": "mallory"}})
    assert isinstance(no, Deny) and (no.status, no.reason) == (401, "jwt_bad_claim")
    assert b"globex" not in no.body and b"mallory" not in no.body

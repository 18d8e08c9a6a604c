"""JWT callers through a real Envoy (its jwt_authn filter) behind both fronts: the default (ext_authz
+ the ext_proc gateway), the fast one (`services.front: http`, `services.auth: inline`), and inline
auth on the ext_proc gateway.

Keys are generated here (RSA for a remote JWKS served by a local aiohttp server, so the fetch and
its cache are real; EC for a JWKS file), tokens minted with pyjwt. A valid token reaches its
tenant/team/user (the ledger says so), an API key still works on the same listener, and every bad
token is refused 401 in the client's own format, saying why, without echoing the token."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jwt
import openai
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from gemini_inbound_helpers import google_error
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from harness import FRONT_SERVICES, OPENAI_PROVIDER_KEY, Stack, front_stack
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sidegate.ports import free_port

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "hi"}]
CORP = "https://idp.corp.test"
PARTNER = "https://idp.partner.test"
DOWN = "https://idp.down.test"
ROT = "https://idp.rotating.test"
METERED = "https://idp.metered.test"
AUD = "sidegate"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(alg: Any, key: Any, kid: str, name: str) -> dict[str, Any]:
    return {**json.loads(alg.to_jwk(key.public_key())), "kid": kid, "alg": name, "use": "sig"}


class JwksServer:
    """The corp issuer's JWKS endpoint (aiohttp in a thread), counting fetches."""

    def __init__(self) -> None:
        self.fetches = 0
        self.doc = {"keys": [_jwk(RSAAlgorithm, RSA_KEY, "corp-1", "RS256")]}
        self.rotating: dict[str, Any] = {"keys": [_jwk(RSAAlgorithm, OTHER_KEY, "rot-0", "RS256")]}
        """The `rot` issuer's JWKS (cached 1 s): a test publishes a new key in it."""
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def jwks(_: web.Request) -> web.Response:
            self.fetches += 1
            return web.json_response(self.doc)

        async def rotating(_: web.Request) -> web.Response:
            return web.json_response(self.rotating)

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", jwks)
        app.router.add_get("/rotating/jwks.json", rotating)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    s = JwksServer()
    yield s
    s.stop()


def _extra(jwks_url: str, jwks_file: Path, dead_url: str) -> dict[str, Any]:
    return {
        "jwt": {"providers": {
            # remote JWKS; tenant, team (nested claim) and user from the token
            "corp": {"issuer": CORP, "audiences": [AUD, "other-app"], "jwks": {"url": jwks_url, "cache_s": 300},
                     "claims": {"tenant": "org", "team": "grp.team", "user": "sub"}},
            # a JWKS file, EC keys; every token is globex's, limited to one model
            "partner": {"issuer": PARTNER, "audiences": [AUD], "jwks": {"file": str(jwks_file)}, "tenant": "globex",
                        "claims": {"user": "email"}, "models": ["gpt-4o-mini", "claude-haiku"]},
            # keys rotated at the issuer are picked up once the cached copy is old
            "rot": {"issuer": ROT, "audiences": [AUD], "jwks": {"url": jwks_url.replace("/.well-known/", "/rotating/"),
                                                                 "cache_s": 1}, "tenant": "acme"},
            # a JWKS endpoint nobody serves: its tokens cannot be verified (503, not the caller's fault)
            "down": {"issuer": DOWN, "audiences": [AUD], "jwks": {"url": dead_url, "timeout_s": 0.5}, "tenant": "acme"},
            # an inline JWKS; its callers limited together by a per-key override naming `jwt:metered`
            "metered": {"issuer": METERED, "audiences": [AUD], "tenant": "globex", "claims": {"user": "sub"},
                        "jwks": {"inline": {"keys": [_jwk(RSAAlgorithm, RSA_KEY, "corp-1", "RS256")]}}},
        }},
        "tenants": {"globex": {"quota": {"keys": {"jwt:metered": {"rpm": 2}}}}},
    }  # fmt: skip


@pytest.fixture(scope="module", params=[*sorted(FRONT_SERVICES), "inline"])
def gw(request, tmp_path_factory, fake_openai, fake_anthropic, jwks_server) -> Iterator[Stack]:
    jwks_file = tmp_path_factory.mktemp("jwks") / "partner.json"
    jwks_file.write_text(json.dumps({"keys": [_jwk(ECAlgorithm, EC_KEY, "partner-1", "ES256")]}))
    extra = _extra(jwks_server.url, jwks_file, f"http://127.0.0.1:{free_port()}/jwks.json")
    if request.param == "inline":  # inline auth on the ext_proc gateway (its metadata forwarding)
        extra["services"] = {"auth": "inline", "front": "ext_proc"}
        s = Stack(tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, extra=extra)
        s.start()
        yield s
        s.stop()
        return
    workdir = tmp_path_factory.mktemp("stack")
    yield from front_stack(request.param, workdir, fake_openai.url, fake_anthropic.url, extra)


def corp_token(*, key: Any = RSA_KEY, kid: str = "corp-1", **over: Any) -> str:
    """A corp token; a claim given as None is left out."""
    now = int(time.time())
    claims = {"iss": CORP, "aud": AUD, "iat": now, "exp": now + 600, "sub": "alice", "org": "acme",
              "grp": {"team": "research"}}  # fmt: skip
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def partner_token(**over: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": PARTNER,
        "aud": AUD,
        "iat": now,
        "exp": now + 600,
        "sub": "p-7",
        "email": "bob@partner.test",
    }
    claims.update(over)
    return jwt.encode(claims, EC_KEY, algorithm="ES256", headers={"kid": "partner-1"})


def oai(gw: Stack, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=token, max_retries=0)


def chat(gw: Stack, token: str, model: str = "gpt-4o-mini", **kw: Any) -> Any:
    return oai(gw, token).chat.completions.create(model=model, messages=MSG, **kw)


def _record(gw: Stack, rid: str) -> Any:
    return gw.wait_ledger(lambda r: r.request_id == rid)


def test_a_valid_token_reaches_its_tenant_team_and_user(gw, fake_openai):
    rid = uuid.uuid4().hex
    token = corp_token(name="Zoë Ørsted", roles=["a", {"b": 1}])  # other claims, of any shape, are no matter
    resp = oai(gw, token).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, extra_headers={"x-request-id": rid}
    )
    assert resp.status_code == 200 and resp.parse().choices
    rec = _record(gw, rid)
    assert (rec.tenant, rec.team, rec.user, rec.key_id) == ("acme", "research", "alice", "jwt:corp")
    upstream = fake_openai.requests[-1].headers
    assert upstream["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    assert token not in repr(upstream) and "x-sidegate-jwt" not in upstream


def test_the_anthropic_sdk_with_a_token_and_a_file_jwks_ec_key(gw, fake_anthropic):
    rid = uuid.uuid4().hex
    client = anthropic.Anthropic(base_url=gw.base_url, auth_token=partner_token(), max_retries=0)
    msg = client.messages.create(
        model="claude-haiku", max_tokens=5, messages=MSG, extra_headers={"x-request-id": rid}
    )
    assert msg.content
    rec = _record(gw, rid)
    assert (rec.tenant, rec.team, rec.user, rec.key_id) == ("globex", "", "bob@partner.test", "jwt:partner")


def test_the_issuer_model_allow_list_applies(gw):
    with pytest.raises(openai.PermissionDeniedError):
        chat(gw, partner_token(), model="gpt-4o")
    assert chat(gw, partner_token()).choices


def test_api_keys_still_work_on_the_same_listener(gw):
    assert chat(gw, gw.keys["acme"].key).choices
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=gw.keys["globex"].key, max_retries=0)
    assert client.messages.create(model="claude-haiku", max_tokens=5, messages=MSG).content
    with pytest.raises(openai.AuthenticationError) as err:
        chat(gw, gw.keys["acme-revoked"].key)
    assert "revoked" in str(err.value)


def _now() -> int:
    return int(time.time())


BAD = {
    "expired": (lambda: corp_token(exp=_now() - 600, iat=_now() - 1200), "expired"),
    "not_yet_valid": (lambda: corp_token(nbf=_now() + 600), "not valid yet"),
    "wrong_audience": (lambda: corp_token(aud="someone-else"), "audience"),
    "wrong_issuer": (lambda: corp_token(iss="https://evil.test"), "issuer"),
    "bad_signature": (lambda: corp_token(key=OTHER_KEY), "signature"),
    "unknown_kid": (lambda: corp_token(key=OTHER_KEY, kid="rotated-9"), "kid"),
    "malformed": (lambda: "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "malformed"),
    "missing_tenant": (lambda: corp_token(org=None), "tenant"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_token_is_refused_401_in_the_openai_format(gw, fake_openai, case):
    make, says = BAD[case]
    token = make()
    before = len(fake_openai.requests)
    with pytest.raises(openai.AuthenticationError) as err:
        chat(gw, token)
    body = err.value.response.json()
    assert err.value.status_code == 401 and body["error"]["code"] == "invalid_api_key"
    assert says in body["error"]["message"], body
    assert token not in err.value.response.text
    assert len(fake_openai.requests) == before


@pytest.mark.parametrize("case", ["expired", "wrong_audience", "wrong_issuer", "bad_signature"])
def test_bad_tokens_are_refused_in_the_anthropic_format(gw, case):
    make, says = BAD[case]
    client = anthropic.Anthropic(base_url=gw.base_url, auth_token=make(), max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        client.messages.create(model="claude-haiku", max_tokens=5, messages=MSG)
    body = err.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert says in body["error"]["message"]


def test_a_forged_findings_header_is_never_believed(gw):
    forged = "v1 " + json.dumps({"corp": {"org": "acme", "sub": "mallory", "grp": {"team": "research"}}})
    for auth in ({}, {"authorization": "Bearer " + corp_token(exp=_now() - 600, iat=_now() - 1200)}):
        r = httpx.post(gw.base_url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG},
                       headers={"x-sidegate-jwt": forged, **auth}, timeout=10)  # fmt: skip
        assert r.status_code == 401, r.text


def test_the_remote_jwks_is_fetched_once_and_cached(gw, jwks_server):
    before = jwks_server.fetches
    for _ in range(5):
        assert chat(gw, corp_token()).choices
    assert jwks_server.fetches == before
    assert 1 <= before <= 3  # at start (per stack); not per request


def test_tokens_never_reach_the_logs(gw):
    token = corp_token(sub="carol")
    assert chat(gw, token).choices
    with pytest.raises(openai.AuthenticationError):
        chat(gw, corp_token(exp=_now() - 600, iat=_now() - 1200))
    time.sleep(0.3)
    logs = gw.logs()
    assert token not in logs and token.split(".")[1] not in logs


def test_a_lower_case_bearer_scheme_works_too(gw):
    r = httpx.post(gw.base_url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG},
                   headers={"authorization": "bearer " + corp_token()}, timeout=10)  # fmt: skip
    assert r.status_code == 200, r.text


def test_unfetchable_issuer_keys_are_a_503_in_the_clients_format(gw):
    token = jwt.encode({"iss": DOWN, "aud": AUD, "exp": _now() + 600, "sub": "x"}, RSA_KEY, algorithm="RS256")
    with pytest.raises(openai.InternalServerError) as err:
        chat(gw, token)
    assert err.value.status_code == 503 and "signing keys" in err.value.response.json()["error"]["message"]


def test_a_gemini_client_with_a_token(gw):
    def client(token: str) -> genai.Client:
        opts = genai_types.HttpOptions(base_url=gw.base_url, headers={"authorization": "Bearer " + token})
        return genai.Client(
            api_key="jwt-caller", http_options=opts
        )  # (its key header is ignored: the token decides)

    rid = uuid.uuid4().hex
    ok = client(corp_token(sub="gina"))
    resp = ok.models.generate_content(model="gpt-4o-mini", contents="hi",
                                      config=genai_types.GenerateContentConfig(http_options=genai_types.HttpOptions(
                                          headers={"x-request-id": rid})))  # fmt: skip
    assert resp.text
    rec = _record(gw, rid)
    assert (rec.tenant, rec.user, rec.api) == ("acme", "gina", "gemini")
    bad = client(corp_token(aud="elsewhere"))
    with pytest.raises(genai_errors.ClientError) as err:
        bad.models.generate_content(model="gpt-4o-mini", contents="hi")
    assert (
        err.value.code == 401
        and err.value.status == "UNAUTHENTICATED"
        and "audience" in str(err.value.message)
    )
    r = httpx.post(gw.base_url + "/v1beta/models/gpt-4o-mini:generateContent",
                   json={"contents": [{"parts": [{"text": "hi"}]}]},
                   headers={"authorization": "Bearer " + corp_token(exp=_now() - 600, iat=_now() - 1200)}, timeout=10)  # fmt: skip
    assert "expired" in google_error(r, 401, "UNAUTHENTICATED")


def test_a_streamed_answer_for_a_token_caller(gw):
    rid = uuid.uuid4().hex
    stream = oai(gw, corp_token(sub="sam")).chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True, extra_headers={"x-request-id": rid}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    rec = _record(gw, rid)
    assert (rec.tenant, rec.team, rec.user, rec.stream) == ("acme", "research", "sam", True)


def test_a_key_published_by_the_issuer_is_used_once_the_cache_refreshes(gw, jwks_server):
    kid = "rot-" + uuid.uuid4().hex[:8]
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"iss": ROT, "aud": AUD, "exp": _now() + 600, "sub": "r"}, new_key, algorithm="RS256",
                       headers={"kid": kid})  # fmt: skip
    with pytest.raises(openai.AuthenticationError) as err:
        chat(gw, token)
    assert "kid" in err.value.response.json()["error"]["message"]
    jwks_server.rotating = {
        "keys": [*jwks_server.rotating["keys"], _jwk(RSAAlgorithm, new_key, kid, "RS256")]
    }
    deadline = time.monotonic() + 10
    while True:  # the cached copy (1 s) is refetched: bounded wait
        try:
            assert chat(gw, token).choices
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "the new key was never fetched"
            time.sleep(0.25)


def test_a_per_key_limit_naming_the_issuer_applies_to_its_callers_together(gw):
    def token(sub: str) -> str:
        claims = {"iss": METERED, "aud": AUD, "exp": _now() + 600, "sub": sub}
        return jwt.encode(claims, RSA_KEY, algorithm="RS256", headers={"kid": "corp-1"})

    assert chat(gw, token("u1")).choices and chat(gw, token("u2")).choices
    with pytest.raises(openai.RateLimitError) as err:
        chat(gw, token("u3"))
    assert err.value.response.json()["error"]["type"]
    assert chat(gw, gw.keys["globex"].key).choices  # the tenant's keys are not limited by it

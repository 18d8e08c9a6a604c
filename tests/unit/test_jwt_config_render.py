"""JWT callers' configuration (sidegate/config/jwt.py) and the Envoy config rendered from it
(sidegate/bootstrap/jwt_authn.py), checked by `envoy --mode validate`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidegate import trust
from sidegate.bootstrap.render import bootstrap
from sidegate.config import ConfigError, parse
from sidegate.supervisor import envoy_binary
from sidegate.wire import AUTHZ_NS, FRONT_FILTER, GATEWAY_FILTER, JWT_HEADER, JWT_NS


def _jwks() -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = json.loads(
        RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    )
    return {"keys": [{**key, "kid": "k1", "alg": "RS256", "use": "sig"}]}


JWKS = _jwks()


def _base(jwt: dict[str, Any], **services: Any) -> dict[str, Any]:
    return {
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K"}},
        "models": {"m": {"routes": [{"provider": "openai"}]}},
        "services": services or {"auth": "ext_authz"},  # the gRPC front unless the test names one
        "jwt": jwt,
    }


def _provider(**over: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"issuer": "https://idp.test", "audiences": ["sidegate"], "jwks": {"inline": JWKS},
                         "claims": {"tenant": "org", "team": "team", "user": "sub"}}  # fmt: skip
    p.update(over)
    return p


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(data, env={})
    return err.value.problems


def test_a_provider_parses_with_defaults():
    cfg = parse(_base({"providers": {"corp": _provider()}}), env={})
    p = cfg.jwt.providers["corp"]
    assert p.models == ["*"] and p.clock_skew_s == 60 and p.jwks.cache_s == 600
    assert json.loads(p.jwks.inline_json()) == JWKS


@pytest.mark.parametrize(
    ("over", "where", "what"),
    [
        ({"jwks": {}}, "jwt.providers.corp.jwks", "exactly one of file, inline, url"),
        (
            {"jwks": {"file": "/x", "url": "https://idp.test/jwks"}},
            "jwt.providers.corp.jwks",
            "given: file, url",
        ),
        ({"jwks": {"url": "ftp://idp.test/jwks"}}, "jwt.providers.corp.jwks.url", "http:// or https://"),
        ({"jwks": {"inline": "{not json"}}, "jwt.providers.corp.jwks.inline", "not JSON"),
        ({"jwks": {"inline": {"keys": []}}}, "jwt.providers.corp.jwks.inline", "non-empty `keys`"),
        ({"audiences": []}, "jwt.providers.corp.audiences", "at least 1"),
        ({"claims": {"user": "sub"}}, "jwt.providers.corp", "exactly one of `tenant`"),
        ({"tenant": "acme"}, "jwt.providers.corp", "exactly one of `tenant`"),
        ({"tenant": "a b", "claims": {}}, "jwt.providers.corp.tenant", "must match"),
        ({"issuer": ""}, "jwt.providers.corp.issuer", "at least 1"),
        ({"clock_skew_s": -1}, "jwt.providers.corp.clock_skew_s", "greater than or equal"),
        (
            {"jwks": {"url": "https://idp.test/jwks", "cache_s": 0}},
            "jwt.providers.corp.jwks.cache_s",
            "greater than",
        ),
        ({"nope": 1}, "jwt.providers.corp.nope", "Extra inputs"),
    ],
)
def test_bad_provider_config_is_refused_with_its_location(over, where, what):
    problems = _problems(_base({"providers": {"corp": _provider(**over)}}))
    assert any(p.startswith(where + ":") and what in p for p in problems), problems


def test_two_providers_with_one_issuer_are_refused():
    problems = _problems(_base({"providers": {"a": _provider(), "b": _provider()}}))
    assert any("same issuer" in p for p in problems), problems


def _filters(cfg_data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    boot = bootstrap(parse(cfg_data, env={}))
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return boot, hcm["http_filters"]


def _by_name(filters: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(f["typed_config"] for f in filters if f["name"] == name)


def test_no_providers_no_filter():
    _, filters = _filters(_base({}, auth="ext_authz"))  # the ext_authz filter of the gRPC front
    assert all(f["name"] != JWT_NS for f in filters)
    assert "metadata_context_namespaces" not in _by_name(filters, AUTHZ_NS)


def test_the_filter_comes_first_and_never_refuses_by_itself():
    jwt = {"providers": {"corp": _provider(), "remote": _provider(issuer="https://other.test",
                                                                  jwks={"url": "https://idp.other.test/keys", "cache_s": 30})}}  # fmt: skip
    boot, filters = _filters(_base(jwt, auth="ext_authz"))  # the ext_authz filter of the gRPC front
    # (after the config version header's filter, which only removes/sets that header: bootstrap/version.py)
    assert filters[0]["name"] == "sidegate.config_version" and filters[1]["name"] == JWT_NS
    cfg = filters[1]["typed_config"]
    corp = cfg["providers"]["corp"]
    assert corp["forward"] is False and corp["payload_in_metadata"] == "corp"
    assert corp["failed_status_in_metadata"] == "corp:failed"
    assert {h["value_prefix"] for h in corp["from_headers"]} == {"Bearer ", "bearer "}
    assert {h["name"] for h in corp["from_headers"]} == {"authorization"} and "from_params" not in corp
    assert json.loads(corp["local_jwks"]["inline_string"]) == JWKS
    remote = cfg["providers"]["remote"]["remote_jwks"]
    assert remote["http_uri"]["cluster"] == "jwks.remote" and remote["cache_duration"] == "30.000s"
    reqs = cfg["rules"][0]["requires"]["requires_any"]["requirements"]
    assert reqs == [{"provider_name": "corp"}, {"provider_name": "remote"}, {"allow_missing_or_failed": {}}]
    assert _by_name(filters, AUTHZ_NS)["metadata_context_namespaces"] == [JWT_NS]
    cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "jwks.remote")
    assert cluster["transport_socket"]["typed_config"]["sni"] == "idp.other.test"
    ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]
    assert ep == {"address": "idp.other.test", "port_value": 443}


def test_inline_auth_forwards_the_namespace_to_the_gateway():
    _, filters = _filters(_base({"providers": {"corp": _provider()}}, auth="inline", front="ext_proc"))
    ns = _by_name(filters, GATEWAY_FILTER)["metadata_options"]["forwarding_namespaces"]["untyped"]
    assert ns == [AUTHZ_NS, JWT_NS]


def test_the_http_front_gets_the_namespace_as_envoys_own_header():
    _, filters = _filters(_base({"providers": {"corp": _provider()}}, auth="inline", front="http"))
    front = _by_name(filters, FRONT_FILTER)
    assert {"exact": JWT_HEADER} in front["disallowed_headers"]["patterns"]
    added = front["http_service"]["authorization_request"]["headers_to_add"]
    assert {"key": JWT_HEADER, "value": f"v1 %DYNAMIC_METADATA({JWT_NS})%"} in added


@pytest.mark.parametrize("services", [{}, {"auth": "inline"}, {"auth": "inline", "front": "http"}])
def test_rendered_bootstrap_passes_envoy_validate(tmp_path: Path, services: dict[str, str]):
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(JWKS))
    token = tmp_path / "token.yaml"
    trust.write_private(token, trust.token_file_text(trust.generate()))
    jwt = {"providers": {
        "corp": _provider(),
        "file": _provider(issuer="https://file.test", jwks={"file": str(jwks_file)}),
        "remote": _provider(issuer="https://remote.test", jwks={"url": "https://idp.remote.test/keys"}),
        "plain": _provider(issuer="https://plain.test", jwks={"url": "http://127.0.0.1:1/keys"}, tenant="acme", claims={}),
    }}  # fmt: skip
    data = _base(jwt, **services)
    data["services"]["internal_token_file"] = str(token)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap(parse(data, env={}))))
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id", "-l", "error"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_mesh_snippets_carry_the_jwt_filter_first_and_the_jwks_clusters():
    """An operator's own Envoy (docs/jwt.md, "In a service mesh"): the snippets rendered from a config
    with JWT callers start with jwt_authn, before the gateway ext_proc that checks the callers (inline
    auth: no ext_authz filter), and bring the remote JWKS' cluster."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("deploy_render_all_jwt", root / "deploy" / "render_all.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    jwt = {"providers": {"corp": _provider(jwks={"url": "https://idp.test/keys"})}}
    snip = mod.snippets(parse(_base(jwt), env={}))
    names = [f["name"] for f in snip["http_filters"]]
    assert names[:2] == ["sidegate.config_version", JWT_NS] and AUTHZ_NS not in names
    assert names.index(JWT_NS) < names.index("sidegate.gateway")
    gateway = snip["http_filters"][names.index("sidegate.gateway")]["typed_config"]
    assert JWT_NS in gateway["metadata_options"]["forwarding_namespaces"]["untyped"]
    assert "jwks.corp" in {c["name"] for c in snip["clusters"]}

"""JWT callers (docs/jwt.md): Envoy's `jwt_authn` filter, first in the chain, verifies a bearer token
against the configured issuers' JWKS; Sidegate's auth decides.

The filter never refuses a request itself (`allow_missing_or_failed`): an API key in the same
`Authorization: Bearer` header (or in `x-api-key`...) must still reach the key check, and a refusal
must be in the client's API format, which Envoy's own text reply is not. So each provider files
what it found as dynamic metadata (namespace `envoy.filters.http.jwt_authn`): a verified token's
payload under the provider's name, a failure's status `{code, message}` under `<provider>:failed`.
The authenticator (ext_authz's service, or the gateway ext_proc / HTTP front with `auth: inline`)
reads that namespace: Envoy sends it to ext_authz (`metadata_context_namespaces`) and to the ext_proc
gateway (`forwarding_namespaces`); the HTTP front gets it as the JSON header `x-sidegate-jwt` that
Envoy adds to the check request (a client-sent one is never copied there). The token is never
forwarded (`forward: false`; the credential headers are removed anyway) nor logged.

A remote JWKS is fetched through a cluster of its own (`jwks.<provider>`, TLS for https URLs), at
start (the listener waits for the first fetch, so the first requests do not fail for want of keys)
and again when the copy is `cache_s` old.
"""

from __future__ import annotations

from typing import Any

from sidegate.bootstrap.clusters import SYSTEM_CA, address
from sidegate.bootstrap.limits import duration
from sidegate.config import SidegateConfig
from sidegate.config.jwt import JwtProviderConfig
from sidegate.wire import JWT_FAILED_SUFFIX, JWT_HEADER, JWT_NS

FROM_HEADERS = [{"name": "authorization", "value_prefix": "Bearer "},
                {"name": "authorization", "value_prefix": "bearer "}]  # fmt: skip
"""Where tokens are read: only `Authorization: Bearer` (Envoy matches the prefix case-sensitively;
not Envoy's default `access_token` query parameter: a token in a URL ends in logs)."""


def jwks_cluster_name(provider: str) -> str:
    return f"jwks.{provider}"


def enabled(cfg: SidegateConfig) -> bool:
    return bool(cfg.jwt.providers)


def _provider(name: str, p: JwtProviderConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "issuer": p.issuer,
        "audiences": list(p.audiences),
        "forward": False,
        "from_headers": FROM_HEADERS,
        "payload_in_metadata": name,
        "failed_status_in_metadata": name + JWT_FAILED_SUFFIX,
        "clock_skew_seconds": p.clock_skew_s,
    }
    src = p.jwks
    if src.url is not None:
        out["remote_jwks"] = {
            "http_uri": {
                "uri": src.url,
                "cluster": jwks_cluster_name(name),
                "timeout": duration(src.timeout_s),
            },
            "cache_duration": duration(src.cache_s),
            # Fetched when Envoy starts (the listener waits for it), refetched 1 s after a failure.
            "async_fetch": {"fast_listener": False, "failed_refetch_duration": "1s"},
            "retry_policy": {
                "num_retries": 2,
                "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"},
            },
        }
    elif src.file is not None:
        out["local_jwks"] = {"filename": src.file}
    else:
        out["local_jwks"] = {"inline_string": src.inline_json()}
    return out


def jwt_filter(cfg: SidegateConfig) -> dict[str, Any]:
    """The jwt_authn filter: every provider may verify the bearer, none is required."""
    providers = cfg.jwt.providers
    return {
        "name": JWT_NS,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {name: _provider(name, p) for name, p in providers.items()},
            "rules": [{
                "match": {"prefix": "/"},
                "requires": {"requires_any": {"requirements": [
                    *({"provider_name": name} for name in providers), {"allow_missing_or_failed": {}}]}},
            }],
        },
    }  # fmt: skip


def jwks_clusters(cfg: SidegateConfig) -> list[dict[str, Any]]:
    """One cluster per remote JWKS."""
    out = []
    for name, p in cfg.jwt.providers.items():
        if p.jwks.url is None:
            continue
        tls, host, port = p.jwks.endpoint()
        cname = jwks_cluster_name(name)
        cluster: dict[str, Any] = {
            "name": cname,
            "type": "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "connect_timeout": duration(min(p.jwks.timeout_s, 5.0)),
            "load_assignment": {"cluster_name": cname,
                                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(host, port)}}]}]},
        }  # fmt: skip
        if tls:
            cluster["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": host,
                    "common_tls_context": {"validation_context": {
                        "trusted_ca": {"filename": SYSTEM_CA},
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}]}},
                },
            }  # fmt: skip
        out.append(cluster)
    return out


def front_request_headers() -> list[dict[str, str]]:
    """Added to the HTTP front's check request: the jwt_authn namespace as JSON. The `v1 ` prefix
    keeps the value non-empty when the namespace is absent (no bearer), so the header is always
    Envoy's own."""
    return [{"key": JWT_HEADER, "value": f"v1 %DYNAMIC_METADATA({JWT_NS})%"}]

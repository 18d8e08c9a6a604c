"""JWT callers: what Envoy's jwt_authn filter found about the bearer token -> an identity or a refusal.

Envoy verifies (signature, issuer, audience, times: sidegate/bootstrap/jwt_authn.py); this module
reads its findings, the `envoy.filters.http.jwt_authn` metadata namespace:
- a provider's verified payload (key: the provider's name) -> tenant, team and user from the
  configured claims (a fixed tenant if so configured), the provider's model allow-list, and the key
  id `jwt:<provider>` (a stable label: per-key quota overrides may name it, the ledger shows it);
- a bearer that is neither verified nor a Sidegate key -> 401 in the client's format naming why
  (expired, not yet valid, audience, issuer, signature, unknown key id, malformed), from the failure
  status Envoy filed (`<provider>:failed`). The token itself is never echoed nor logged.
- anything else (no bearer, a Sidegate key, a key in another header) -> None: the key check decides.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from sidegate import keys
from sidegate.config.base import NAME_PATTERN
from sidegate.config.jwt import JwtConfig, JwtProviderConfig
from sidegate.core.intake import inbound_api
from sidegate.errors import error_body
from sidegate.features.auth.verdict import Allow, Deny
from sidegate.wire import JWT_FAILED_SUFFIX, JWT_HEADER

KEY_ID_PREFIX = "jwt:"

# google::jwt_verify::Status codes Envoy files (`code`) -> (metric reason, what the client is told).
_UNKNOWN_ISSUER = 24
_REASONS: dict[int, tuple[str, str]] = {
    2: ("jwt_not_yet_valid", "The bearer token is not valid yet (nbf)."),
    3: ("jwt_expired", "The bearer token has expired."),
    _UNKNOWN_ISSUER: ("jwt_issuer", "The bearer token's issuer is not accepted."),
    25: ("jwt_audience", "The bearer token's audience is not accepted."),
    26: ("jwt_signature", "The bearer token's signature does not verify."),
    32: ("jwt_unknown_kid", "The bearer token is signed with a key the issuer does not publish (kid)."),
}
_MALFORMED = ("jwt_malformed", "The bearer token is malformed (not a valid JWT).")
_MALFORMED_CODES = frozenset(range(4, 24)) | {27}
"""jwt_verify_lib's parse errors: not three parts, bad base64, header or payload not JSON, bad
`alg`/`exp`/`nbf`/`iat`/`aud`/`iss` types (codes 4-23), several tokens (27)."""
_LEVEL_NAME = re.compile(r"[!-~]{1,128}")
"""A team or user name from a claim: printable ASCII without spaces (an e-mail address, a subject id)."""
_UNVERIFIED = ("jwt_unverified", "The bearer token could not be verified.")
_KEYS_UNAVAILABLE = (
    "jwks_unavailable",
    "The token issuer's signing keys are unavailable right now; retry later.",
)
"""The issuer's JWKS could not be fetched or is unusable (jwt_verify_lib's `Jwks...` statuses, by
their fixed text: their codes moved between versions): the gateway's trouble, a 503."""


def _claim(payload: dict[str, Any], name: str) -> Any:
    """`name` as a top-level claim (URL-like names have dots), else as a dotted path."""
    if name in payload:
        return payload[name]
    node: Any = payload
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _text(value: Any) -> str | None:
    """A claim's value as a name: a string or number; a list gives its first element."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def parse_header(value: str | None) -> dict[str, Any] | None:
    """The jwt_authn namespace from the HTTP front's `x-sidegate-jwt` header (`v1 <JSON>`)."""
    if not value:
        return None
    _, _, doc = value.partition(" ")
    if not doc.startswith("{"):
        return None  # Envoy's `-`: the namespace is absent (no bearer was presented)
    try:
        data = orjson.loads(doc)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def header_value(namespace: dict[str, Any]) -> str:
    """The inverse of :func:`parse_header` (the ext_proc gateway hands the namespace on this way)."""
    return "v1 " + orjson.dumps(namespace).decode()


def _bearer(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


class JwtCallers:
    """The configured issuers, asked once per request by the authenticator."""

    def __init__(self, cfg: JwtConfig):
        self.providers: dict[str, JwtProviderConfig] = dict(cfg.providers)
        self.models = {name: tuple(p.models) for name, p in self.providers.items()}

    @classmethod
    def from_config(cls, cfg: JwtConfig) -> JwtCallers | None:
        return cls(cfg) if cfg.providers else None

    def decide(self, headers: dict[str, str], namespace: dict[str, Any] | None) -> Allow | Deny | None:
        """Allow (a verified token), Deny (a bad token), None (not a token: the key check decides)."""
        if namespace:
            for name, p in self.providers.items():
                payload = namespace.get(name)
                if isinstance(payload, dict):
                    return self._identity(headers, name, p, payload)
        bearer = _bearer(headers)
        if bearer is None or bearer.startswith(keys.PREFIX) or bearer.count(".") != 2:
            return (
                None  # no bearer, a Sidegate key, or not JWT-shaped (someone's other API key?): the key check
            )
        failure = self._failure(namespace or {})
        reason, message = failure or _UNVERIFIED
        return _refuse(headers, reason, message, 503 if failure is _KEYS_UNAVAILABLE else 401)

    def _failure(self, namespace: dict[str, Any]) -> tuple[str, str] | None:
        """The most telling failure: a provider whose issuer matched says more than one that did not."""
        found: tuple[str, str] | None = None
        for name in self.providers:
            status = namespace.get(name + JWT_FAILED_SUFFIX)
            if not isinstance(status, dict):
                continue
            code = int(status.get("code", 0) or 0)
            if code in _REASONS:
                reason = _REASONS[code]
            elif code in _MALFORMED_CODES:
                reason = _MALFORMED
            elif str(status.get("message", "")).startswith("Jwks"):
                reason = _KEYS_UNAVAILABLE
            else:
                reason = _UNVERIFIED
            if code != _UNKNOWN_ISSUER:
                return reason
            found = found or reason
        return found

    def _identity(
        self, headers: dict[str, str], name: str, p: JwtProviderConfig, payload: dict[str, Any]
    ) -> Allow | Deny:
        claims = p.claims
        tenant = p.tenant or (_text(_claim(payload, claims.tenant)) if claims.tenant else None)
        if not tenant or not NAME_PATTERN.match(tenant):
            what = "no" if not tenant else "an invalid"
            return _refuse(
                headers, "jwt_no_tenant", f"The bearer token carries {what} tenant (claim '{claims.tenant}')."
            )
        if p.tenants and tenant not in p.tenants:
            return _refuse(headers, "jwt_bad_claim", "The bearer token names a tenant its issuer may not name.")
        levels = {"team": claims.team, "user": claims.user}
        found = {lv: (_text(_claim(payload, c)) or "") if c else "" for lv, c in levels.items()}
        for level, value in found.items():
            if value and not _LEVEL_NAME.fullmatch(value):  # it travels in headers and the access log
                return _refuse(
                    headers,
                    "jwt_bad_claim",
                    f"The bearer token's {level} (claim '{levels[level]}') is not a usable name.",
                )
        team, user = found["team"], found["user"]
        return Allow(
            tenant=tenant, key_id=KEY_ID_PREFIX + name, models=self.models[name], team=team, user=user
        )


def _refuse(headers: dict[str, str], reason: str, message: str, status: int = 401) -> Deny:
    api = inbound_api(headers.get(":path", "/"), headers)
    code = "invalid_api_key" if status == 401 else "service_unavailable"
    return Deny(status, api, error_body(api, status, message, code=code), reason)


def namespace_from_headers(headers: dict[str, str]) -> dict[str, Any] | None:
    """Inline auth: the namespace the adapter (ext_proc gateway or HTTP front) put in the headers."""
    return parse_header(headers.get(JWT_HEADER))

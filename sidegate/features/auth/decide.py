"""The pure authorization decision: request headers + key records -> allow or deny.

No gRPC here, so it is testable directly; :mod:`authz.service` adapts it to Envoy's ext_authz.
"""

from __future__ import annotations

import math
import time
from typing import Any

from sidegate import keys
from sidegate.core.intake import inbound_api, query_key
from sidegate.errors import Api, error_body
from sidegate.features.auth.jwt import JwtCallers
from sidegate.features.auth.throttle import FailureThrottle
from sidegate.features.auth.verdict import Allow, Deny
from sidegate.keystore import KeyRecord
from sidegate.orgstore import Org

__all__ = ["Allow", "Deny", "authorize", "decide", "presented_key", "throttled"]

# Client credential headers: all are removed before anything goes upstream.


def presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return value.strip()
    path = headers.get(":path", "")
    if "?" in path and inbound_api(path, headers) is Api.GEMINI:
        return query_key(path)
    return None


_MISSING = {
    Api.GEMINI: "Missing API key: send 'x-goog-api-key: <key>' or the 'key' query parameter.",
}


def _deny(api: Api, reason: str, message: str) -> Deny:
    return Deny(401, api, error_body(api, 401, message, code="invalid_api_key"), reason)


def throttled(headers: dict[str, str], wait_s: float) -> Deny:
    """Too many failed attempts (with this key id, or from this address): 429 in the client's format."""
    api = inbound_api(headers.get(":path", "/"), headers)
    body = error_body(
        api, 429, "Too many failed authentication attempts; retry later.", code="auth_rate_limited"
    )
    return Deny(429, api, body, "throttled", {"retry-after": str(max(1, math.ceil(wait_s)))})


def decide(headers: dict[str, str], records: dict[str, KeyRecord], now: float | None = None) -> Allow | Deny:
    api = inbound_api(headers.get(":path", "/"), headers)
    key = presented_key(headers)
    if key is None:
        message = _MISSING.get(api, "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'.")
        return _deny(api, "missing_key", message)
    kid = keys.key_id(key)
    if kid is None:
        return _deny(api, "malformed_key", "Incorrect API key provided.")
    rec = records.get(kid)
    # Hash and compare even for unknown ids so timing does not reveal which ids exist.
    ok = keys.verify(key, rec.hash if rec else "sha256:" + "0" * 64)
    if rec is None or not ok:
        return _deny(api, "unknown_key", "Incorrect API key provided.")
    if rec.revoked:
        return _deny(api, "revoked_key", "This API key has been revoked.")
    if rec.expires_at and (now if now is not None else time.time()) >= rec.expires_at:
        return _deny(api, "expired_key", "This API key has expired.")
    return Allow(tenant=rec.tenant, key_id=rec.id, models=rec.models, team=rec.team, user=rec.user)


def authorize(headers: dict[str, str], records: dict[str, KeyRecord], throttle: FailureThrottle, source: str,
              now: float | None = None, jwt: JwtCallers | None = None,
              jwt_found: dict[str, Any] | None = None, org: Org | None = None) -> Allow | Deny:  # fmt: skip
    """:func:`decide` behind the failure throttle (see :mod:`sidegate.features.auth.throttle` for the keying).

    The key id is parsed first (a regex, no hashing): a blocked (source, id) is refused before its
    secret is checked. A valid key is then allowed whatever else failed from its address; a
    failure is counted and answered 429 instead of 401 once its address reached its bound.
    With JWT callers configured, `jwt_found` is what Envoy's jwt_authn filter found (its metadata
    namespace): a verified or refused bearer token is decided there (sidegate/features/auth/jwt.py),
    its refusals counted like a bad key's; `org` (the live teams and users) gives a JWT caller its
    registered team and narrows its allow-list like a key's.
    """
    if jwt is not None:
        verdict = jwt.decide(headers, jwt_found)
        if isinstance(verdict, Allow):
            if org is not None and (verdict.team or verdict.user):
                verdict.team, verdict.models = org.caller(
                    verdict.tenant, verdict.team, verdict.user, verdict.models
                )
            return verdict
        if verdict is not None:
            if verdict.status != 401:  # a 503: the issuer's keys are unavailable, not the caller's fault
                return verdict
            throttle.failure(source, None)
            wait = throttle.blocked(source)
            return throttled(headers, wait) if wait else verdict
    key = presented_key(headers)
    kid = keys.key_id(key) if key else None
    if kid is not None:
        wait = throttle.blocked_key(source, kid)
        if wait:
            return throttled(headers, wait)
    result = decide(headers, records, now)
    if isinstance(result, Allow):
        return result
    throttle.failure(source, kid)
    wait = throttle.blocked(source)
    return throttled(headers, wait) if wait else result

"""Label bounding for every Sidegate metric (sidegate/metrics/__init__.py re-exports it all).

Models and providers must be in the config (else ``other``; a routing change adds its own, live),
tenants are the configured ones plus at most ``MAX_DYNAMIC_TENANTS`` more seen at run time, and
nothing that looks like a key ever becomes a label.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidegate.config import SidegateConfig


OTHER = "other"
MAX_DYNAMIC_TENANTS = 500

# -- label bounding ------------------------------------------------------------------------------

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,63}$")
_KEYLIKE = re.compile(r"^(sgk_|sk-|sk_|pk_|rk_|bearer\b|key-|xai-|gsk_|AIza)", re.IGNORECASE)


def looks_like_secret(value: str) -> bool:
    """True for strings shaped like API keys (never allowed as label values)."""
    return bool(_KEYLIKE.match(value)) or (len(value) >= 32 and not any(c in value for c in "._:/-@"))


class Bounded:
    """Maps raw values onto a bounded label set: known values, plus up to ``max_dynamic`` new
    well-formed ones (first come, first kept); everything else becomes ``other``."""

    def __init__(self, known: Iterable[str] = (), max_dynamic: int = 0, pattern: re.Pattern[str] = _SAFE):
        self.known: set[str] = set(known)
        self.max_dynamic = max_dynamic
        self.pattern = pattern
        self._dynamic: set[str] = set()
        self._lock = threading.Lock()

    def set_known(self, values: Iterable[str]) -> None:
        self.known = set(values)

    def __call__(self, value: object) -> str:
        v = "" if value is None else str(value)
        if v in self.known or v in self._dynamic:
            return v
        if not v or self.max_dynamic <= 0 or not self.pattern.match(v) or looks_like_secret(v):
            return OTHER
        with self._lock:
            if len(self._dynamic) < self.max_dynamic:
                self._dynamic.add(v)
                return v
        return OTHER


RESERVED_PROVIDERS = ("cache", "gateway")
"""Pseudo-providers for answers the gateway gave itself (cache hit, refusal)."""
CACHE_RESULTS = ("hit_exact", "hit_semantic", "miss", "bypass", "error")
AUTHZ_REASONS = ("missing_key", "malformed_key", "unknown_key", "revoked_key", "expired_key", "store_error",
                 # JWT callers (sidegate/features/auth/jwt.py)
                 "jwt_expired", "jwt_not_yet_valid", "jwt_audience", "jwt_issuer", "jwt_signature", "jwt_unknown_kid",
                 "jwt_malformed", "jwt_unverified", "jwt_no_tenant", "jwt_bad_claim", "jwks_unavailable")  # fmt: skip
ROUTE_POLICIES = ("ordered", "cost", "latency")
ROUTE_REASONS = ("ordered", "breaker:skip", "cost:cheapest", "cost:unpriced", "latency:fastest", "latency:explore",
                 "override:header", "override:tenant")  # fmt: skip
QUOTA_SCOPES = ("tenant", "team", "user", "key", "model", "global")
GUARD_ACTIONS = ("redact", "mask", "block", "flag", "allow", "log")

tenant_label = Bounded(max_dynamic=MAX_DYNAMIC_TENANTS)
model_label = Bounded()
provider_label = Bounded(RESERVED_PROVIDERS)
cache_label = Bounded(CACHE_RESULTS)
policy_label, route_reason_label = Bounded(ROUTE_POLICIES), Bounded(ROUTE_REASONS)
reason_label = Bounded(AUTHZ_REASONS, max_dynamic=8)
scope_label = Bounded(QUOTA_SCOPES, max_dynamic=8)
action_label = Bounded(GUARD_ACTIONS, max_dynamic=8)
entity_label = Bounded(max_dynamic=64, pattern=re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$"))
name_label = Bounded(max_dynamic=64, pattern=re.compile(r"^[a-z][a-z0-9_.-]{0,39}$"))
"""Stage names, store components/operations: code-defined identifiers."""


def configure(cfg: SidegateConfig, *, live: bool = False) -> None:
    """Teach the label bounds the configured models, providers and tenants (at start). `live`: a
    routing change adds its models and providers (names once served keep their series)."""
    if live:
        model_label.set_known([*model_label.known, *cfg.models])
        provider_label.set_known([*provider_label.known, *cfg.providers])
        return
    model_label.set_known(cfg.models)
    provider_label.set_known([*cfg.providers, *RESERVED_PROVIDERS])
    tenant_label.set_known(cfg.tenants)


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


def status_code(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER



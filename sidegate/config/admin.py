"""The admin API's own settings: sign-in with an OIDC identity provider (the console's users).

Admin tokens (``sga_...``, stored hashed) and the bootstrap ``SIDEGATE_ADMIN_TOKEN`` need no
configuration; an OIDC issuer is optional. Its ID/access tokens (JWTs) are verified by the admin API
itself (signature from the issuer's JWKS, ``iss``, ``aud``, ``exp``/``nbf``), and two claims give the
caller's admin role and tenant.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from sidegate.config.base import StrictModel

ROLES = ("owner", "tenant_admin", "viewer")
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class OidcConfig(StrictModel):
    issuer: str = Field(min_length=1)
    """The ``iss`` every token must carry, exactly."""
    audiences: list[str] = Field(min_length=1)
    """A token's ``aud`` must name at least one of these (e.g. the console's client id)."""
    jwks_url: str | None = None
    """The issuer's JWKS endpoint: fetched at start and cached ``jwks_cache_s``, refetched early
    (at most every ``jwks_min_refresh_s``) when a token names an unknown ``kid``."""
    jwks_file: str | None = None
    """A local JWKS file (read at start)."""
    jwks: dict[str, Any] | None = None
    """An inline JWKS (``{"keys": [...]}``)."""
    jwks_cache_s: float = Field(300.0, gt=0)
    jwks_min_refresh_s: float = Field(30.0, ge=0)
    jwks_timeout_s: float = Field(5.0, gt=0)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    """Accepted signature algorithms: asymmetric only (a shared-secret HS256 or ``none`` is refused)."""
    role_claim: str = "sidegate_role"
    """The claim naming the admin role: a string or a list of strings (the most powerful known one wins)."""
    role_map: dict[str, str] = Field(default_factory=dict)
    """Claim value -> role, e.g. ``{"gateway-admins": "owner"}`` for an IdP group claim. Empty: the
    claim's values are role names themselves. A token with no known role is refused (403)."""
    tenant_claim: str = "sidegate_tenant"
    """The claim naming the tenant (required for tenant_admin; a viewer without one sees every tenant)."""
    subject_claim: str = "sub"
    leeway_s: float = Field(30.0, ge=0, le=300)
    """Clock skew allowed on ``exp``/``nbf``/``iat``."""

    @model_validator(mode="after")
    def _one_jwks_source(self) -> OidcConfig:
        given = [n for n in ("jwks_url", "jwks_file", "jwks") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of jwks_url, jwks_file, jwks (got {', '.join(given) or 'none'})"
            )
        bad = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ValueError(f"algorithms must be asymmetric ({', '.join(ASYMMETRIC_ALGORITHMS)}); not {bad}")
        unknown = sorted({r for r in self.role_map.values() if r not in ROLES})
        if unknown:
            raise ValueError(f"role_map values must be roles ({', '.join(ROLES)}); not {unknown}")
        return self


class AdminConfig(StrictModel):
    oidc: OidcConfig | None = None
    """Sign-in with an OIDC issuer's JWTs (the console); None = admin tokens only."""

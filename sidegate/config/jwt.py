"""Callers identified by a JWT from their identity provider: Envoy's jwt_authn filter verifies the
token against the issuer's JWKS; configured claims name the tenant, team and user."""

from __future__ import annotations

from pydantic import Field

from sidegate.config.base import StrictModel


class JwtConfig(StrictModel):
    providers: dict[str, dict[str, object]] = Field(default_factory=dict)
    """Issuer name -> its settings (sidegate/config/jwt.py documents each field)."""

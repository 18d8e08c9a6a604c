"""Callers identified by a JWT from their identity provider: Envoy's jwt_authn filter verifies the
token against the issuer's JWKS; configured claims name the tenant, team and user (docs/jwt.md).

```yaml
jwt:
  providers:
    corp:                                   # the provider's name (in metrics, the key id `jwt:corp`)
      issuer: https://idp.example.com/
      audiences: [sidegate]
      jwks: {url: https://idp.example.com/.well-known/jwks.json, cache_s: 600}
      claims: {tenant: org, team: groups.primary, user: sub}
      models: ["*"]
```
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from sidegate.config.base import NAME_PATTERN, StrictModel, url_parts


class JwksSource(StrictModel):
    """Where the issuer's public keys come from: exactly one of `file`, `inline`, `url`."""

    file: str | None = None
    """A JWKS file Envoy reads at start (mounted from a secret or config map)."""
    inline: str | dict[str, Any] | None = None
    """The JWKS itself: a mapping (`{keys: [...]}`) or its JSON text."""
    url: str | None = None
    """The issuer's JWKS endpoint (http:// or https://): Envoy fetches it through a cluster of its own
    (`jwks.<provider>`), at start and again when the cached copy is `cache_s` old."""
    cache_s: float = Field(600.0, gt=0, le=30 * 86400)
    """How long a fetched JWKS is used before it is fetched again (`url` only)."""
    timeout_s: float = Field(5.0, gt=0, le=60)
    """Time a JWKS fetch may take (`url` only)."""

    @field_validator("inline")
    @classmethod
    def _inline(cls, v: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if v is None:
            return v
        try:
            doc = json.loads(v) if isinstance(v, str) else v
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
            raise ValueError("a JWKS is a mapping with a non-empty `keys` list")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> JwksSource:
        given = [name for name in ("file", "inline", "url") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of file, inline, url (given: {', '.join(given) or 'none'})")
        return self

    def inline_json(self) -> str:
        """The inline JWKS as the JSON text Envoy takes."""
        assert self.inline is not None
        return self.inline if isinstance(self.inline, str) else json.dumps(self.inline, separators=(",", ":"))

    def endpoint(self) -> tuple[bool, str, int]:
        """(tls, host, port) of `url`."""
        assert self.url is not None
        return url_parts(self.url)


class ClaimMap(StrictModel):
    """Which claim names each level. A name is looked up as is first (`https://example.com/org`),
    then as a dotted path into nested objects (`org.team`); a list claim gives its first element."""

    tenant: str | None = None
    team: str | None = None
    user: str | None = None


class JwtProviderConfig(StrictModel):
    issuer: str = Field(min_length=1)
    """The tokens' `iss`, exactly."""
    audiences: list[str] = Field(min_length=1)
    """Accepted `aud` values (one must match). Required: without it any token the identity provider
    issues for any application would be let in."""
    jwks: JwksSource
    claims: ClaimMap = Field(default_factory=ClaimMap)
    tenant: str | None = None
    """A fixed tenant for every token of this issuer (instead of `claims.tenant`)."""
    models: list[str] = Field(default_factory=lambda: ["*"])
    """Client model names a JWT caller of this issuer may use; `*` = every model."""
    clock_skew_s: int = Field(60, ge=0, le=600)
    """Tolerance on `exp` and `nbf`."""
    tenants: list[str] = Field(default_factory=list)
    """The tenants this issuer's tokens may name through `claims.tenant`; empty = any. An identity
    provider shared by several organisations should list its own: a claim is whatever the IdP's
    users can get into their token."""

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, v: str | None) -> str | None:
        if v is not None and not NAME_PATTERN.match(v):
            raise ValueError(f"must match {NAME_PATTERN.pattern}")
        return v

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not NAME_PATTERN.match(t)]
        if bad:
            raise ValueError(f"{bad[0]!r} must match {NAME_PATTERN.pattern}")
        return v

    @model_validator(mode="after")
    def _tenant_source(self) -> JwtProviderConfig:
        if (self.tenant is None) == (self.claims.tenant is None):
            raise ValueError(
                "name the tenant with exactly one of `tenant` (fixed) or `claims.tenant` (a claim)"
            )
        return self


class JwtConfig(StrictModel):
    providers: dict[str, JwtProviderConfig] = Field(default_factory=dict)
    """Provider name -> its issuer, keys and claim mapping. Tokens are read from `Authorization:
    Bearer`; API keys (`sgk_...`, there or in `x-api-key`/`x-goog-api-key`) keep working beside them."""

    @model_validator(mode="after")
    def _names(self) -> JwtConfig:
        issuers: dict[str, str] = {}
        for name, p in self.providers.items():
            if not NAME_PATTERN.match(name):
                raise ValueError(f"provider name {name!r} must match {NAME_PATTERN.pattern}")
            if p.issuer in issuers:
                raise ValueError(
                    f"providers {issuers[p.issuer]!r} and {name!r} have the same issuer {p.issuer!r}"
                )
            issuers[p.issuer] = name
        return self

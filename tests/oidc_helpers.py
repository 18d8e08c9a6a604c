"""A test OIDC issuer: signing keys generated in the test, their JWKS, and JWTs minted with pyjwt."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test.invalid/"
AUDIENCE = "sidegate-console"


@dataclass
class Issuer:
    issuer: str = ISSUER
    audience: str = AUDIENCE
    rsa_key: Any = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec_key.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa1", "use": "sig", "alg": "RS256"},
                {**ec_jwk, "kid": "ec1", "use": "sig", "alg": "ES256"},
            ]
        }

    def config(self, **extra: Any) -> dict[str, Any]:
        """An ``admin.oidc`` config section trusting this issuer (inline JWKS unless overridden)."""
        base: dict[str, Any] = {"issuer": self.issuer, "audiences": [self.audience]}
        if not {"jwks_url", "jwks_file", "jwks"} & set(extra):
            base["jwks"] = self.jwks()
        return {**base, **extra}

    def mint(
        self,
        sub: str = "alice",
        role: Any = "owner",
        tenant: str | None = None,
        *,
        alg: str = "RS256",
        kid: str | None = None,
        lifetime_s: float = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "sub": sub, "iat": now,
                                "exp": now + int(lifetime_s)}  # fmt: skip
        if role is not None:
            body["sidegate_role"] = role
        if tenant is not None:
            body["sidegate_tenant"] = tenant
        body.update(claims)
        key = self.ec_key if alg == "ES256" else self.rsa_key
        return jwt.encode(
            body, key, algorithm=alg, headers={"kid": kid or ("ec1" if alg == "ES256" else "rsa1")}
        )

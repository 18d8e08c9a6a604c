"""auth: who is calling.

`services.auth: ext_authz`: the ext_authz service already decided and attached the tenant
identity as dynamic metadata; this feature only checks it is there.
`services.auth: inline` (the default): the same decision (:func:`sidegate.features.auth.decide.authorize`, same
key cache) runs here, at request-headers time, saving Envoy one gRPC round trip per request; the
client's credential headers are removed by the gateway's header mutation instead of ext_authz.
"""

from __future__ import annotations

from sidegate import metrics
from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.core.intake import COMPLETIONS, COUNT_TOKENS, EMBEDDINGS, MODELS
from sidegate.errors import GatewayError
from sidegate.features.auth.decide import Allow, authorize
from sidegate.features.auth.jwt import JwtCallers, namespace_from_headers
from sidegate.features.auth.keycache import KeyCache
from sidegate.features.auth.throttle import FailureThrottle
from sidegate.store import Store
from sidegate.wire import CREDENTIAL_HEADERS


class AuthFeature(Feature):
    name = "auth"
    endpoints = frozenset({COMPLETIONS, MODELS, EMBEDDINGS, COUNT_TOKENS})

    @classmethod
    def from_config(cls, cfg: SidegateConfig, store: Store | None = None) -> AuthFeature:
        if cfg.services.auth != "inline":
            return cls()
        if store is None:
            raise ValueError("services.auth: inline needs the store (key records)")
        jwt = JwtCallers.from_config(cfg.jwt)
        return InlineAuth(KeyCache(store.redis), FailureThrottle.from_config(cfg.services), jwt)

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if not ctx.tenant:
            # ext_authz runs first (or on_headers in inline mode): no identity is a misconfiguration.
            raise GatewayError(401, "Missing tenant identity.", code="invalid_api_key")
        return None


class InlineAuth(AuthFeature):
    """Inline mode: the decision at request headers, with the key records kept in this process."""

    def __init__(self, keys: KeyCache, throttle: FailureThrottle | None = None,
                 jwt: JwtCallers | None = None):  # fmt: skip
        self.keys = keys
        self.throttle = throttle or FailureThrottle()
        self.jwt = jwt
        """JWT callers: the adapter put Envoy's jwt_authn findings in the `x-sidegate-jwt` header
        (never the client's: see sidegate/bootstrap/jwt_authn.py)."""

    def on_headers(self, ctx: RequestContext) -> Reply | None:
        """Fill the identity or refuse (401 in the API's format)."""
        found = namespace_from_headers(ctx.headers) if self.jwt is not None else None
        result = authorize(ctx.headers, self.keys.records, self.throttle, ctx.source,
                           jwt=self.jwt, jwt_found=found,
                           org=self.keys.org if self.jwt is not None else None)  # fmt: skip
        if not isinstance(result, Allow):
            metrics.authz_denial(result.reason)
            return Reply(result.status, result.body, {"content-type": "application/json", **result.headers})
        ctx.tenant, ctx.key_id, ctx.allowed_models = result.tenant, result.key_id, result.models
        ctx.team, ctx.user = result.team, result.user
        ctx.remove_headers.extend(h for h in CREDENTIAL_HEADERS if h in ctx.headers)
        return None

    async def start(self) -> None:
        await self.keys.start()

    async def close(self) -> None:
        await self.keys.stop()

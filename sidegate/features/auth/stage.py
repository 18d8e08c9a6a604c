"""auth: who is calling.

Default (`services.auth: ext_authz`): the ext_authz service already decided and attached the tenant
identity as dynamic metadata; this stage only checks it is there.
`services.auth: inline`: the same decision (:func:`sidegate.features.auth.decide.decide`, same key cache) runs here,
at request-headers time, saving Envoy one gRPC round trip per request; the client's credential
headers are removed by the gateway's header mutation instead of ext_authz.
"""

from __future__ import annotations

from sidegate import metrics
from sidegate.core.context import Reply, RequestContext
from sidegate.errors import GatewayError
from sidegate.features.auth.decide import Allow, authorize
from sidegate.features.auth.keycache import KeyCache
from sidegate.features.auth.throttle import FailureThrottle
from sidegate.wire import CREDENTIAL_HEADERS


class AuthStage:
    name = "auth"

    def __init__(self, keys: KeyCache | None = None, throttle: FailureThrottle | None = None):
        self.keys = keys
        """Set in inline mode: the key records to decide with."""
        self.throttle = throttle or FailureThrottle()

    def authenticate(self, ctx: RequestContext) -> Reply | None:
        """Inline mode, at request headers: fill the identity or refuse (401 in the API's format)."""
        assert self.keys is not None
        result = authorize(ctx.headers, self.keys.records, self.throttle, ctx.source)
        if not isinstance(result, Allow):
            metrics.authz_denial(result.reason)
            return Reply(result.status, result.body, {"content-type": "application/json", **result.headers})
        ctx.tenant, ctx.key_id, ctx.allowed_models = result.tenant, result.key_id, result.models
        ctx.remove_headers.extend(h for h in CREDENTIAL_HEADERS if h in ctx.headers)
        return None

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if not ctx.tenant:
            # ext_authz runs first (or authenticate() in inline mode): no identity is a misconfiguration.
            raise GatewayError(401, "Missing tenant identity.", code="invalid_api_key")
        return None

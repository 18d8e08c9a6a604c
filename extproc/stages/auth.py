"""auth: take the tenant identity ext_authz attached as dynamic metadata."""

from __future__ import annotations

from extproc.context import Reply, RequestContext
from sidegate.errors import GatewayError


class AuthStage:
    name = "auth"

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if not ctx.tenant:
            # ext_authz always runs first; no identity means a misconfigured listener.
            raise GatewayError(401, "Missing tenant identity.", code="invalid_api_key")
        return None

"""route: map the client's model to its configured provider chain; enforce the key's allow-list."""

from __future__ import annotations

from extproc.context import Reply, RequestContext
from sidegate.config import SidegateConfig
from sidegate.errors import GatewayError


class RouteStage:
    name = "route"

    def __init__(self, cfg: SidegateConfig):
        self.models = cfg.models

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        m = self.models.get(ctx.model)
        if m is None:
            raise GatewayError(
                400, f"The model '{ctx.model}' does not exist or is not served by this gateway.",
                code="model_not_found", param="model",
            )  # fmt: skip
        if "*" not in ctx.allowed_models and ctx.model not in ctx.allowed_models:
            raise GatewayError(403, f"This API key is not allowed to use the model '{ctx.model}'.", code="model_not_allowed")
        ctx.model_config = m
        return None

"""route: map the client's model to its configured provider chain; enforce the key's allow-list."""

from __future__ import annotations

from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.errors import GatewayError
from sidegate.features.route.breaker import Breaker
from sidegate.wire import route_value


class RouteStage:
    name = "route"

    def __init__(self, cfg: SidegateConfig, breaker: Breaker | None = None):
        self.models = cfg.models
        self.breaker = breaker

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
        start = self.breaker.start_index(m, ctx.model) if self.breaker is not None else 0
        if start:
            ctx.meta["start"] = start
        ctx.route = route_value(ctx.model, start)
        return None

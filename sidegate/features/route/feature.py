"""route: map the client's model to its configured provider chain; enforce the key's allow-list;
pick the chain's start with the model's routing policy (policy.py: the first provider the breaker
has not ejected, the cheapest, the fastest, an override), and feed the breaker and the latency
stats from every provider try, whichever lane it took."""

from __future__ import annotations

from sidegate.config import ProviderConfig, SidegateConfig
from sidegate.core.completion import Completion
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.core.intake import COMPLETIONS, COUNT_TOKENS, EMBEDDINGS
from sidegate.errors import Api, GatewayError
from sidegate.features.route.breaker import Breaker
from sidegate.features.route.latency import LatencyBoard
from sidegate.features.route.policy import Policy
from sidegate.store import Store


class RouteFeature(Feature):
    name = "route"
    endpoints = frozenset({COMPLETIONS, EMBEDDINGS, COUNT_TOKENS})

    def __init__(self, cfg: SidegateConfig, breaker: Breaker | None = None, store: Store | None = None):
        self.breaker = breaker if breaker is not None else Breaker()
        self.latency = LatencyBoard(store.redis if store is not None else None)
        self.policy = Policy(self.breaker, self.latency)
        if store is not None:  # the latency stats are shared through the store in the background
            self.start, self.close = self.latency.start, self.latency.close  # type: ignore[method-assign]
        self.reconfigure(cfg)

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """The latest routing version's models (a request Envoy routed with another kept version
        brings that version's in `ctx.config`: see on_request)."""
        self.cfg = cfg
        self.models = cfg.models
        self.not_embedding: dict[str, str] = {
            model: bad for model, m in cfg.models.items()
            if (bad := next((r.provider for r in m.routes if not _embeds(cfg.providers[r.provider])), ""))
        }  # fmt: skip
        """Models whose chain holds a provider that cannot embed (that provider): such a model cannot
        serve embeddings (a fallback could not either)."""

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        m = (ctx.config or self.cfg).models.get(ctx.model)  # the request's routing version (live.py)
        if m is None:  # (Google answers an unknown model 404 NOT_FOUND: the model is in its path)
            raise GatewayError(
                404 if ctx.api is Api.GEMINI else 400, f"The model '{ctx.model}' does not exist or is not served by this gateway.",
                code="model_not_found", param="model",
            )  # fmt: skip
        if "*" not in ctx.allowed_models and ctx.model not in ctx.allowed_models:
            raise GatewayError(403, f"This API key is not allowed to use the model '{ctx.model}'.", code="model_not_allowed")
        if ctx.endpoint == EMBEDDINGS and ctx.model in self.not_embedding:
            raise GatewayError(
                400, f"The model '{ctx.model}' does not serve embeddings: its provider "
                f"'{self.not_embedding[ctx.model]}' is neither OpenAI-compatible nor the Gemini API.",
                code="model_not_supported", param="model",
            )  # fmt: skip
        ctx.model_config = m
        ctx.route = self.policy.choose(ctx, m, ctx.config or self.cfg)
        return None

    def on_complete(self, c: Completion) -> None:
        """Answers the gateway gave itself (attempt 0) are not provider tries."""
        self.latency.observe(c)
        model = str(c.meta.get("model", ""))
        m = self.models.get(model)
        if m is None or c.attempt == 0 or c.provider not in self.cfg.providers:
            return
        status = 0 if c.aborted and not c.status else c.status
        self.breaker.record(c.provider, status, m.breaker, c.retry_after_s, model)


def _embeds(p: ProviderConfig) -> bool:
    """OpenAI-shaped providers embed (`/v1/embeddings`), and so does the Gemini API
    (`batchEmbedContents`); Vertex AI's Gemini embeds through `:predict`, which no pair speaks."""
    return p.api is Api.OPENAI or (p.api is Api.GEMINI and p.vertex is None)

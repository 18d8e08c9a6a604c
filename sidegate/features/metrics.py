"""metrics: finished provider tries (:class:`sidegate.core.completion.Completion`) -> metric updates.

Completion hooks run synchronously on the response path: everything here is a few in-memory
counter updates, never I/O, and never raises.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sidegate import metrics as m
from sidegate.core.completion import Completion, CostFn, safe_cost, time_per_output_token, ttft_seconds
from sidegate.core.feature import Feature
from sidegate.core.intake import EMBEDDINGS
from sidegate.core.pricing import Pricing
from sidegate.errors import Api
from sidegate.metrics import child

if TYPE_CHECKING:
    from sidegate.config import SidegateConfig

log = logging.getLogger("sidegate.observe")

OPERATION = "chat"
"""gen_ai.operation.name for /v1/chat/completions, /v1/messages and /v1/responses: the semconv names
no Responses operation and lists OpenAI's chat APIs under `chat` (the API itself is the ledger's `api`)."""
GEMINI_OPERATION = "generate_content"
"""gen_ai.operation.name of a Gemini API client's completion (`models/{model}:generateContent`): the
semconv's own name for it."""
OPERATIONS = {EMBEDDINGS: "embeddings"}
"""gen_ai.operation.name of the other metered endpoints (metadata `endpoint`; a completion has none)."""


class MetricsFeature(Feature):
    """Request-level metrics for final tries, retry counts for the others. `cost`: the config's
    prices unless given."""

    name = "metrics"

    def __init__(self, cfg: SidegateConfig | None = None, cost: CostFn | None = None):
        if cfg is not None:
            m.configure(cfg)
        m.declare_gateway_series()
        self.cost = cost if cost is not None or cfg is None else Pricing(cfg.quota.prices)
        self.priced = cost is None and cfg is not None

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A routing change: its models and providers become labels; costs from the latest price
        table (a cost function given is kept)."""
        m.configure(cfg, live=True)
        if self.priced:
            self.cost = Pricing(cfg.quota.prices)

    def on_complete(self, c: Completion) -> None:
        try:
            self._observe(c)
        except Exception:  # never break the response path
            log.exception("metrics completion hook failed")

    def _observe(self, c: Completion) -> None:
        meta = c.meta
        model = m.model_label(meta.get("model"))
        provider = m.provider_label(c.provider)
        if not c.final:
            child(m.PROVIDER_RETRIES, model, provider, m.status_code(c.status)).inc()
            return
        tenant = m.tenant_label(meta.get("tenant"))
        sclass = m.status_class(c.status)
        default = GEMINI_OPERATION if meta.get("api") == Api.GEMINI.value else OPERATION
        genai = (OPERATIONS.get(meta.get("endpoint"), default), provider, model)
        child(m.REQUESTS, tenant, model, provider, sclass).inc()
        if c.attempt > 1:
            child(m.FALLBACKS, model, provider).inc()
        if c.aborted:
            child(m.ABORTED, model, provider).inc()
        if c.ended_at > 0 and c.started_at > 0:
            child(m.REQUEST_DURATION, *genai, sclass).observe(max(c.ended_at - c.started_at, 0.0))
        usage = c.usage
        if usage is not None:
            child(m.TOKEN_USAGE, *genai, "input").observe(usage.input_tokens)
            child(m.TOKEN_USAGE, *genai, "output").observe(usage.output_tokens)
            for kind, n in (
                ("input", usage.input_tokens), ("output", usage.output_tokens),
                ("cached", usage.cached_tokens), ("cache_creation", usage.cache_creation_tokens),
            ):  # fmt: skip
                if n > 0:
                    child(m.TOKENS, tenant, model, provider, kind).inc(n)
        usd = safe_cost(self.cost, c)
        if usd > 0:
            child(m.COST, tenant, model, provider).inc(usd)
        if 200 <= c.status < 300:
            ttft = ttft_seconds(c)
            if ttft is not None:
                child(m.TIME_TO_FIRST_TOKEN, *genai).observe(ttft)
            tpot = time_per_output_token(c)
            if tpot is not None:
                child(m.TIME_PER_OUTPUT_TOKEN, *genai).observe(tpot)

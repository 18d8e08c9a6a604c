"""Turns finished provider tries (:class:`extproc.upstream.Completion`) into metric updates.

Observers run synchronously on the response path: everything here is a few in-memory counter
updates, never I/O, and never raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidegate import metrics as m
from sidegate.metrics import child
from sidegate.translate.base import Usage

if TYPE_CHECKING:
    from extproc.upstream import Completion
    from sidegate.config import SidegateConfig

log = logging.getLogger("sidegate.observe")

CostFn = Callable[["Completion"], float]
"""Prices a completion in USD (0 when unknown); supplied by the pricing component."""

OPERATION = "chat"  # gen_ai.operation.name for /v1/chat/completions and /v1/messages


def ttft_seconds(c: Completion) -> float | None:
    """Time to first token: streamed tries that produced client-visible content only."""
    if not c.streamed or c.chunks <= 0 or c.first_byte_at <= 0:
        return None
    return max(c.first_byte_at - c.started_at, 0.0)


def time_per_output_token(c: Completion) -> float | None:
    """(end - first byte) / (output tokens - 1), for complete successful streams."""
    if ttft_seconds(c) is None or c.aborted or c.usage is None or c.usage.output_tokens <= 0:
        return None
    return max(c.ended_at - c.first_byte_at, 0.0) / max(c.usage.output_tokens - 1, 1)


def safe_cost(cost: CostFn | None, c: Completion) -> float:
    if cost is None:
        return 0.0
    try:
        value = float(cost(c))
    except Exception:
        log.exception("cost function failed")
        return 0.0
    return value if value > 0 else 0.0


class MetricsObserver:
    """An ``Upstream`` observer: request-level metrics for final tries, retry counts for the others."""

    def __init__(self, cfg: SidegateConfig | None = None, cost: CostFn | None = None):
        if cfg is not None:
            m.configure(cfg)
        self.cost = cost

    def __call__(self, c: Completion) -> None:
        try:
            self._observe(c)
        except Exception:  # never break the response path
            log.exception("metrics observer failed")

    def _observe(self, c: Completion) -> None:
        meta = c.meta
        model = m.model_label(meta.get("model"))
        provider = m.provider_label(c.provider)
        if not c.final:
            child(m.PROVIDER_RETRIES, model, provider, m.status_code(c.status)).inc()
            return
        tenant = m.tenant_label(meta.get("tenant"))
        sclass = m.status_class(c.status)
        genai = (OPERATION, provider, model)
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


def short_circuit(
    meta: dict[str, Any],
    status: int,
    *,
    provider: str = "cache",
    usage: Usage | None = None,
    started_at: float = 0.0,
    streamed: bool = False,
) -> Completion:
    """A Completion for an answer the gateway gave itself (cache hit: provider="cache"; refusal:
    provider="gateway"), so the same observers count and ledger it. ``attempt`` is 0: no provider try."""
    from extproc.upstream import Completion

    now = time.monotonic()
    return Completion(
        meta=meta, provider=provider, upstream_model=str(meta.get("model", "")), status=status, usage=usage,
        final=True, streamed=streamed, attempt=0, started_at=started_at or now, first_byte_at=now,
        ended_at=now, chunks=1 if streamed else 0,
    )  # fmt: skip

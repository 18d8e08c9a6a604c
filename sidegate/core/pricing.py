"""The cost of one try's usage. Below the features: the quota charges it, the metrics and the ledger
report it, from the same price table (`quota.prices`, sidegate/config/pricing.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidegate.config.pricing import Price, price_for
from sidegate.translate.base import Usage

if TYPE_CHECKING:
    from sidegate.core.completion import Completion


def cost_usd(price: Price, usage: Usage) -> float:
    """Cost of ``usage``; ``usage.input_tokens`` includes cached and cache-written tokens."""
    prompt = max(usage.input_tokens, 0)
    cached = min(max(usage.cached_tokens, 0), prompt)
    written = min(max(usage.cache_creation_tokens, 0), prompt - cached)
    plain = prompt - cached - written
    cached_rate = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    write_rate = price.input_per_mtok if price.cache_write_per_mtok is None else price.cache_write_per_mtok
    total = (
        plain * price.input_per_mtok
        + cached * cached_rate
        + written * write_rate
        + max(usage.output_tokens, 0) * price.output_per_mtok
    )
    return total / 1_000_000


class Pricing:
    """Prices a completion (a :data:`sidegate.core.completion.CostFn`): the provider's model name
    first, then the client's (0 when neither is priced or the usage is unknown)."""

    def __init__(self, prices: dict[str, Price]):
        self.prices = prices

    def __call__(self, c: Completion) -> float:
        price = price_for(self.prices, c.upstream_model) or price_for(self.prices, str(c.meta.get("model", "")))
        return cost_usd(price, c.usage) if price is not None and c.usage is not None else 0.0

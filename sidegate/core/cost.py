"""What one try's usage costs at a model's price."""

from __future__ import annotations

from sidegate.config.pricing import Price
from sidegate.translate.base import Usage


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

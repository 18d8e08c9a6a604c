"""Model prices (USD per million tokens), by exact name or glob."""

from __future__ import annotations

import fnmatch

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    """USD per million tokens. Cached reads and cache writes default to the input price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)
    """Price of prompt tokens read from the provider's cache (OpenAI cached, Anthropic cache read)."""
    cache_write_per_mtok: float | None = Field(None, ge=0)
    """Price of prompt tokens written to the cache (Anthropic cache creation)."""


def price_for(prices: dict[str, Price], model: str) -> Price | None:
    """Exact model name first, then the longest matching glob (``gpt-4o-mini*``), else None."""
    if model in prices:
        return prices[model]
    best: tuple[int, Price] | None = None
    for pattern, price in prices.items():
        is_glob = any(c in pattern for c in "*?[")
        if is_glob and fnmatch.fnmatchcase(model, pattern) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), price)
    return best[1] if best else None

"""Token usage in every API's words: parsing a provider's counters into :class:`Usage` and
formatting :class:`Usage` for a client, in one place so every pair (and the direct lane, and cache
replays) counts tokens the same way.

:class:`Usage` counts *all* prompt tokens in ``input_tokens`` (as OpenAI does); Anthropic reports the
uncached part, the cache reads and the cache writes separately, so both directions convert.
"""

from __future__ import annotations

from typing import Any

from sidegate.translate.base import Usage
from sidegate.translate.common import as_count, as_dict

__all__ = [
    "ANTHROPIC_USAGE_KEYS",
    "anthropic_usage",
    "openai_usage",
    "parse_anthropic_usage",
    "parse_openai_usage",
    "thinking_tokens",
]

ANTHROPIC_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
"""The counters an Anthropic ``usage`` object carries (stream events repeat them cumulatively)."""


# ------------------------------------------------------------------------------------- parsing


def parse_openai_usage(u: Any) -> Usage | None:
    """An OpenAI ``usage`` object, or None when the provider sent none."""
    if not isinstance(u, dict):
        return None
    prompt = as_count(u.get("prompt_tokens"))
    cached = as_count(as_dict(u.get("prompt_tokens_details")).get("cached_tokens"))
    return Usage(
        input_tokens=prompt,
        output_tokens=as_count(u.get("completion_tokens")),
        cached_tokens=min(cached, prompt),  # cached tokens are a part of the prompt tokens
    )


def parse_anthropic_usage(raw: dict[str, Any]) -> Usage:
    """An Anthropic ``usage`` object (or the merged counters of a stream)."""
    read = as_count(raw.get("cache_read_input_tokens"))
    created = as_count(raw.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=as_count(raw.get("input_tokens")) + read + created,
        output_tokens=as_count(raw.get("output_tokens")),
        cached_tokens=read,
        cache_creation_tokens=created,
    )


def thinking_tokens(u: dict[str, Any]) -> int | None:
    """Anthropic's ``output_tokens_details.thinking_tokens``, when the provider reported it."""
    details = u.get("output_tokens_details")
    if not isinstance(details, dict) or details.get("thinking_tokens") is None:
        return None
    return as_count(details["thinking_tokens"])


# ----------------------------------------------------------------------------------- formatting


def openai_usage(usage: Usage, thinking_tokens: int | None = None) -> dict[str, Any]:
    """:class:`Usage` as an OpenAI client reads it (``reasoning_tokens`` only when known)."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }
    if thinking_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": thinking_tokens}
    return out


def anthropic_usage(usage: Usage) -> dict[str, Any]:
    """:class:`Usage` as an Anthropic client reads it (``input_tokens`` without the cached parts)."""
    return {
        "input_tokens": max(0, usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
    }

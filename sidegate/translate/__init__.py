"""Schema translators between client and provider APIs (pure functions; see docs/translation.md)."""

from __future__ import annotations

from sidegate.errors import Api
from sidegate.translate.anthropic_to_openai import AnthropicToOpenAI
from sidegate.translate.base import ProviderRequest, StreamTranslator, TranslateOptions, Translator, Usage
from sidegate.translate.common import sse_error_event
from sidegate.translate.openai_to_anthropic import OpenAIToAnthropic
from sidegate.translate.passthrough import AnthropicPassthrough, OpenAIPassthrough

__all__ = [
    "ProviderRequest",
    "StreamTranslator",
    "TranslateOptions",
    "Translator",
    "Usage",
    "get_translator",
    "sse_error_event",
]

_TRANSLATORS: dict[tuple[Api, Api], Translator] = {
    (Api.OPENAI, Api.ANTHROPIC): OpenAIToAnthropic(),
    (Api.ANTHROPIC, Api.OPENAI): AnthropicToOpenAI(),
    (Api.OPENAI, Api.OPENAI): OpenAIPassthrough(),
    (Api.ANTHROPIC, Api.ANTHROPIC): AnthropicPassthrough(),
}


def get_translator(inbound: Api, upstream: Api) -> Translator:
    """The (stateless, shared) translator for a client API and a provider API."""
    return _TRANSLATORS[(Api(inbound), Api(upstream))]

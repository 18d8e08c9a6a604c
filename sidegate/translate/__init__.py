"""Schema translators between client and provider APIs (pure functions; see docs/translation.md).

Two kinds, chosen by ``get_translator`` (the one registry):

- same API on both sides: a passthrough, ``<api>_<api>.py`` (the client's body with the model
  rewritten, the provider's bytes untouched: never decoded and re-encoded);
- different APIs: :class:`~sidegate.translate.codecs.translator.CanonicalTranslator`, one codec
  per API (``codecs/<api>/``) around one canonical form (``codecs/form.py``).

Shared parts: :mod:`.base` (the interface), :mod:`.usage` (token usage in every API's words),
:mod:`.common` (type guards, error bodies).
"""

from __future__ import annotations

from sidegate.errors import Api
from sidegate.translate.anthropic_anthropic import AnthropicAnthropic
from sidegate.translate.base import ProviderRequest, StreamTranslator, TranslateOptions, Translator, Usage
from sidegate.translate.codecs.translator import CanonicalTranslator
from sidegate.translate.common import sse_error_event
from sidegate.translate.openai_openai import OpenAIOpenAI
from sidegate.translate.responses_responses import ResponsesResponses

__all__ = [
    "ProviderRequest",
    "StreamTranslator",
    "TranslateOptions",
    "Translator",
    "Usage",
    "get_translator",
    "sse_error_event",
]

# Cross-API pairs: one client codec + one provider codec. Same-API pairs: passthrough.
_TRANSLATORS: dict[tuple[Api, Api], Translator] = {
    (Api.OPENAI, Api.ANTHROPIC): CanonicalTranslator(Api.OPENAI, Api.ANTHROPIC),
    (Api.ANTHROPIC, Api.OPENAI): CanonicalTranslator(Api.ANTHROPIC, Api.OPENAI),
    (Api.OPENAI, Api.OPENAI): OpenAIOpenAI(),
    (Api.ANTHROPIC, Api.ANTHROPIC): AnthropicAnthropic(),
}


def _responses_pairs() -> dict[tuple[Api, Api], Translator]:
    """OpenAI's Responses API: the passthrough between two of its ends, the canonical codecs
    (sidegate/translate/codecs/responses/) to and from the other APIs."""
    from sidegate.translate.codecs.responses_client import ResponsesClientTranslator
    from sidegate.translate.codecs.translator import CanonicalTranslator

    return {
        (Api.RESPONSES, Api.RESPONSES): ResponsesResponses(),
        (Api.RESPONSES, Api.OPENAI): ResponsesClientTranslator(Api.OPENAI),
        (Api.RESPONSES, Api.ANTHROPIC): ResponsesClientTranslator(Api.ANTHROPIC),
        (Api.OPENAI, Api.RESPONSES): CanonicalTranslator(Api.OPENAI, Api.RESPONSES),
        (Api.ANTHROPIC, Api.RESPONSES): CanonicalTranslator(Api.ANTHROPIC, Api.RESPONSES),
    }


_TRANSLATORS.update(_responses_pairs())


def _bedrock_pairs() -> dict[tuple[Api, Api], Translator]:
    """AWS Bedrock's Converse API (a provider API only): every client API to it, through the
    canonical codecs (sidegate/translate/codecs/bedrock/)."""
    from sidegate.translate.codecs.responses_client import ResponsesClientTranslator

    return {
        (Api.OPENAI, Api.BEDROCK): CanonicalTranslator(Api.OPENAI, Api.BEDROCK),
        (Api.ANTHROPIC, Api.BEDROCK): CanonicalTranslator(Api.ANTHROPIC, Api.BEDROCK),
        (Api.RESPONSES, Api.BEDROCK): ResponsesClientTranslator(Api.BEDROCK),
    }


_TRANSLATORS.update(_bedrock_pairs())


def _gemini_pairs() -> dict[tuple[Api, Api], Translator]:
    """Google's Gemini API (codecs/gemini/): the passthrough between two of its ends, the
    canonical codecs to and from the other APIs."""
    from sidegate.translate.codecs.responses_client import ResponsesClientTranslator
    from sidegate.translate.gemini_gemini import GeminiGemini

    return {
        (Api.GEMINI, Api.GEMINI): GeminiGemini(),
        (Api.OPENAI, Api.GEMINI): CanonicalTranslator(Api.OPENAI, Api.GEMINI),
        (Api.ANTHROPIC, Api.GEMINI): CanonicalTranslator(Api.ANTHROPIC, Api.GEMINI),
        (Api.RESPONSES, Api.GEMINI): ResponsesClientTranslator(Api.GEMINI),
        (Api.GEMINI, Api.OPENAI): CanonicalTranslator(Api.GEMINI, Api.OPENAI),
        (Api.GEMINI, Api.ANTHROPIC): CanonicalTranslator(Api.GEMINI, Api.ANTHROPIC),
        (Api.GEMINI, Api.RESPONSES): CanonicalTranslator(Api.GEMINI, Api.RESPONSES),
        # (the Bedrock pairs are registered before: a Gemini client's is here, with its kind)
        (Api.GEMINI, Api.BEDROCK): CanonicalTranslator(Api.GEMINI, Api.BEDROCK),
    }


_TRANSLATORS.update(_gemini_pairs())


def get_translator(inbound: Api, upstream: Api) -> Translator:
    """The (stateless, shared) translator for a client API and a provider API."""
    return _TRANSLATORS[(Api(inbound), Api(upstream))]

"""Schema translators between client and provider APIs (pure functions; see docs/translation.md).

One module per (client API, provider API) pair, named ``<client>_<provider>.py``: it holds that
pair's request, response, error and stream translation. Shared parts: :mod:`.base` (the
interface), :mod:`.usage` (token usage in every API's words), :mod:`.common` (type guards, error
bodies), and ``<api>_shapes.py`` (one API's message/tool shapes built from another's, when a pair
module would otherwise grow past one sitting). ``get_translator`` is the one registry.
"""

from __future__ import annotations

from sidegate.errors import Api
from sidegate.translate.anthropic_anthropic import AnthropicAnthropic
from sidegate.translate.anthropic_openai import AnthropicOpenAI
from sidegate.translate.base import ProviderRequest, StreamTranslator, TranslateOptions, Translator, Usage
from sidegate.translate.common import sse_error_event
from sidegate.translate.openai_anthropic import OpenAIAnthropic
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

_TRANSLATORS: dict[tuple[Api, Api], Translator] = {
    (Api.OPENAI, Api.ANTHROPIC): OpenAIAnthropic(),
    (Api.ANTHROPIC, Api.OPENAI): AnthropicOpenAI(),
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


def get_translator(inbound: Api, upstream: Api) -> Translator:
    """The (stateless, shared) translator for a client API and a provider API."""
    return _TRANSLATORS[(Api(inbound), Api(upstream))]

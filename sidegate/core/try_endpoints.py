"""The per-try stage's endpoints other than completions (embeddings, count_tokens): which provider
APIs serve each, with their upstream path and same-schema pair, and the try the stage answers
itself (a token count past the providers that can count)."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.core.context import Reply
from sidegate.core.intake import COUNT_TOKENS, EMBEDDINGS
from sidegate.errors import Api, GatewayError
from sidegate.translate.base import Translator
from sidegate.translate.count_tokens import COUNT_TOKENS_UPSTREAM_PATH, AnthropicCountTokens
from sidegate.translate.embeddings import EMBEDDINGS_UPSTREAM_PATH, OpenAIEmbeddings
from sidegate.translate.embeddings_gemini import GeminiEmbeddings
from sidegate.wire import TOKEN_COUNT_HEADER

SAME_SCHEMA: dict[str, dict[Api, tuple[str | None, type[Translator]]]] = {
    EMBEDDINGS: {Api.OPENAI: (EMBEDDINGS_UPSTREAM_PATH, OpenAIEmbeddings), Api.GEMINI: (None, GeminiEmbeddings)},
    COUNT_TOKENS: {Api.ANTHROPIC: (COUNT_TOKENS_UPSTREAM_PATH, AnthropicCountTokens)},
}
"""The endpoints other than completions: the provider APIs that serve each (the gateway routes them
only there), with the upstream path (None: the pair's own, the model being in it) and the pair."""


class TryAnswered(Exception):
    """The per-try stage answers this try itself, without its provider (the adapter sends `reply`):
    a token count that falls back to a provider that cannot count (not Anthropic-shaped) gets the
    gateway's estimate, which the count_tokens feature put in the metadata (`count_estimate`)."""

    def __init__(self, reply: Reply):
        super().__init__(reply.status)
        self.reply = reply


def estimated_count(meta: dict[str, Any]) -> TryAnswered | None:
    n = meta.get("count_estimate")  # a float once it crossed Envoy's metadata (a protobuf Struct)
    if not isinstance(n, int | float) or isinstance(n, bool):
        return None
    headers = {"content-type": "application/json", TOKEN_COUNT_HEADER: "estimate"}
    return TryAnswered(Reply(200, orjson.dumps({"input_tokens": int(n)}), headers))


def endpoint_translator(endpoint: str, provider: str, upstream: Api) -> tuple[Translator, str | None]:
    """The pair of a try of `endpoint` and its fixed upstream path (None: the translator's own)."""
    found = SAME_SCHEMA.get(endpoint)
    if found is None:
        raise GatewayError(500, f"Sidegate: no provider try serves the endpoint '{endpoint}'.")
    if upstream not in found:  # the route feature refuses such a chain: a config changed under a request
        shapes = " or ".join(a.value for a in found)
        raise GatewayError(400, f"Provider '{provider}' cannot serve {endpoint}: it is not {shapes}-shaped.")
    path, pair = found[upstream]
    return pair(), path

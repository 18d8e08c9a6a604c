"""Pair: an OpenAI embeddings client (`POST /v1/embeddings`) -> a Gemini API provider
(`batchEmbedContents`).

Request: every `input` string becomes one of `requests` (`model: models/<m>`, its text as the one
part of `content`, `dimensions` as `outputDimensionality`); `user` has no Gemini counterpart and is
not sent. Token arrays cannot be sent: Gemini embeds text, so they get a 400 naming the fix.
Answer: `embeddings[i].values` -> `data[i].embedding`, as floats or, when the client asked for
`encoding_format: base64`, as OpenAI encodes them (little-endian float32 bytes, base64).

Usage: `batchEmbedContents` reports none, so the gateway counts it, ceil(characters / 4) per input
(Google's own rule of thumb for its tokenizer), and both answers it in `usage` and reports it for
the quota true-up, budgets and ledger: what the client reads is what it is charged.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from sidegate.errors import Api, GatewayError
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.common import as_dict, as_list, client_error, dumps, provider_object
from sidegate.translate.openai_openai import OpenAIOpenAIStream

__all__ = ["MAX_GEMINI_INPUTS", "GeminiEmbeddings", "gemini_embeddings_path", "gemini_error"]

MAX_GEMINI_INPUTS = 100
"""`batchEmbedContents` takes at most 100 requests (OpenAI takes 2048 inputs)."""
CHARS_PER_TOKEN = 4


def gemini_embeddings_path(model: str) -> str:
    """The Gemini API's canonical path (a provider's `path_prefix` replaces `/v1beta`)."""
    return f"/v1beta/models/{model}:batchEmbedContents"


def gemini_error(api: Api, status: int, body: bytes) -> tuple[int, bytes]:
    """A Google error body -> the client's format (a wrong API key, Gemini's 400 `API_KEY_INVALID`,
    is turned into the gateway's 502 by the per-try stage)."""
    return client_error(api, status, body)


def _texts(inp: Any) -> list[str]:
    if isinstance(inp, str):
        return [inp]
    items = as_list(inp)
    if items and all(isinstance(t, str) for t in items):
        return items
    raise GatewayError(
        400,
        "This model's provider (Gemini) embeds text only: send 'input' as a string or an array of strings, "
        "not token arrays.",
        param="input",
    )


class GeminiEmbeddings:
    """One try's pair (made per try: it keeps the request's encoding and its token count)."""

    inbound = Api.OPENAI
    upstream = Api.GEMINI

    def __init__(self) -> None:
        self._base64 = False
        self._model = ""
        self._tokens = 0

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        texts = _texts(body.get("input"))
        if len(texts) > MAX_GEMINI_INPUTS:
            raise GatewayError(
                400,
                f"'input' has {len(texts)} items: this model's provider (Gemini) embeds at most "
                f"{MAX_GEMINI_INPUTS} per request.",
                param="input",
            )
        self._base64 = body.get("encoding_format") == "base64"
        self._model = model
        self._tokens = sum(-(-len(t) // CHARS_PER_TOKEN) for t in texts)
        dims = body.get("dimensions")
        extra = {"outputDimensionality": dims} if dims is not None else {}
        name = f"models/{model}"
        requests = [{"model": name, "content": {"parts": [{"text": t}]}, **extra} for t in texts]
        return ProviderRequest(gemini_embeddings_path(model), dumps({"requests": requests}), {})

    def response(self, body: bytes) -> tuple[bytes, Usage | None]:
        obj = provider_object(body)
        data = []
        for i, item in enumerate(as_list(obj.get("embeddings"))):
            values = as_list(as_dict(item).get("values"))
            vector: Any = values
            if self._base64:
                vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        n = self._tokens
        out = {"object": "list", "data": data, "model": self._model,
               "usage": {"prompt_tokens": n, "total_tokens": n}}  # fmt: skip
        return dumps(out), Usage(input_tokens=n)

    def stream(self, *, client_wants_usage: bool) -> OpenAIOpenAIStream:
        """Never asked for (embeddings are not streamed); relayed as is should a provider stream."""
        return OpenAIOpenAIStream(client_wants_usage=True)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return gemini_error(Api.OPENAI, status, body)

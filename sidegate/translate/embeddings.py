"""Embeddings (`POST /v1/embeddings`): the request's checks and the same-schema pair.

Only OpenAI-shaped providers serve embeddings (OpenAI, Azure deployments, vLLM, Ollama...): the
body goes through with the provider's model name, the answer comes back as the provider wrote it
(vectors are never touched: float or base64, whichever the client asked), and its
`usage.prompt_tokens` is read on the side (quota true-up, budgets, metrics, ledger).
"""

from __future__ import annotations

from typing import Any

from sidegate.errors import GatewayError
from sidegate.translate.base import ProviderRequest, TranslateOptions
from sidegate.translate.common import dumps, is_int
from sidegate.translate.openai_openai import OpenAIOpenAI, OpenAIOpenAIStream

__all__ = ["EMBEDDINGS_UPSTREAM_PATH", "MAX_INPUTS", "OpenAIEmbeddings", "check_embeddings_request"]

EMBEDDINGS_UPSTREAM_PATH = "/v1/embeddings"
MAX_INPUTS = 2048
"""OpenAI's bound on the inputs of one request (strings or token arrays)."""
ENCODING_FORMATS = ("float", "base64")


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param)


def check_embeddings_request(body: dict[str, Any]) -> None:
    """The checks OpenAI makes on an embeddings request, with its wording, so a client meets the
    same 400 whichever provider would have served it (the body is then sent on as it is).
    `input`: a non-empty string, a list of them, a token array (integers) or a list of them."""
    inp = body.get("input")
    if inp is None:
        raise _bad("Missing required parameter: 'input'.", "input")
    if isinstance(inp, str):
        if not inp:
            raise _bad("'input' must not be an empty string.", "input")
    elif isinstance(inp, list):
        _check_input_list(inp)
    else:
        raise _bad("'input' must be a string, an array of strings, an array of integers (tokens) "
                   "or an array of arrays of integers.", "input")  # fmt: skip
    dims = body.get("dimensions")
    if dims is not None and (not is_int(dims) or dims < 1):
        raise _bad("'dimensions' must be a positive integer.", "dimensions")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ENCODING_FORMATS:
        raise _bad(f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}.", "encoding_format")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("'user' must be a string.", "user")
    if body.get("stream") not in (None, False):
        raise _bad("Embeddings cannot be streamed: remove 'stream'.", "stream")


def _check_input_list(inp: list[Any]) -> None:
    if not inp:
        raise _bad("'input' must not be an empty array.", "input")
    if len(inp) > MAX_INPUTS:
        raise _bad(f"'input' has {len(inp)} items: at most {MAX_INPUTS} per request.", "input")
    first = inp[0]
    if is_int(first):  # one token array
        _check_tokens(inp, "input")
    elif isinstance(first, str):
        for i, item in enumerate(inp):
            if not isinstance(item, str) or not item:
                raise _bad(
                    f"'input[{i}]' must be a non-empty string (all items of 'input' of one kind).",
                    f"input[{i}]",
                )
    elif isinstance(first, list):
        for i, item in enumerate(inp):
            if not isinstance(item, list) or not item:
                raise _bad(f"'input[{i}]' must be a non-empty array of integers (tokens).", f"input[{i}]")
            _check_tokens(item, f"input[{i}]")
    else:
        raise _bad("'input[0]' must be a string, an integer (token) or an array of integers.", "input[0]")


def _check_tokens(tokens: list[Any], param: str) -> None:
    if not all(is_int(t) and t >= 0 for t in tokens):
        raise _bad(f"'{param}' must hold non-negative integers (tokens) only.", param)


class OpenAIEmbeddings(OpenAIOpenAI):
    """Pair: an embeddings client -> an OpenAI-shaped provider (same schema, model renamed). The
    answer (usage in `usage`) and errors are the chat passthrough's; only the path and the stream
    (never asked for) differ."""

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        out = body if body.get("model") == model else {**body, "model": model}
        return ProviderRequest(EMBEDDINGS_UPSTREAM_PATH, dumps(out), {})

    def stream(self, *, client_wants_usage: bool, model: str = "") -> OpenAIOpenAIStream:
        """Embeddings are never streamed; a provider that streams anyway is relayed event by event."""
        return OpenAIOpenAIStream(client_wants_usage=True)

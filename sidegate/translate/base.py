"""The one small interface every translator implements.

A translator owns one (inbound API, upstream API) pair. It is pure: bytes and dicts in, bytes and
dicts out, no I/O. The one exception is OpenAI's ``created`` timestamp, which translators producing
OpenAI responses read from an injectable ``clock`` (fixed in tests). Streaming state lives in a
per-request :class:`StreamTranslator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sidegate.errors import Api


@dataclass(slots=True)
class Usage:
    """Token usage normalised across providers.

    ``input_tokens`` counts *all* prompt tokens (cached ones included, as OpenAI's
    ``prompt_tokens`` does); ``cached_tokens`` is the part read from the provider's prompt cache;
    ``cache_creation_tokens`` the part written to it (Anthropic only).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class TranslateOptions:
    """Per-route knobs a translator may need (all have safe defaults)."""

    default_max_tokens: int = 4096
    """Anthropic requires max_tokens: used when the OpenAI client sent none."""
    anthropic_version: str = "2023-06-01"
    anthropic_body_version: str | None = None
    """Anthropic on Vertex AI (`vertex-2023-10-16`): the API version goes in the body
    (`anthropic_version`) instead of a header, and the model is in the path, never in the body."""
    reasoning_budgets: dict[str, int] = field(
        default_factory=lambda: {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
    )
    """OpenAI ``reasoning_effort`` -> Anthropic ``thinking.budget_tokens``; empty disables the mapping."""
    stream: bool | None = None
    """The client asked for a stream outside its body (a Gemini client: `:streamGenerateContent` in
    its path); None: the request body says (OpenAI's and Anthropic's `stream`)."""
    force_upstream_usage: bool = True
    """OpenAI upstream + streaming: ask for ``stream_options.include_usage`` even when the client
    did not, so usage is exact; the extra usage chunk is then stripped from the client stream."""


@dataclass(slots=True)
class ProviderRequest:
    """What goes to the provider: canonical path, body bytes, schema headers (no credentials)."""

    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class StreamTranslator(Protocol):
    """Per-request streaming state: provider SSE bytes in, client SSE bytes out.

    ``feed`` accepts arbitrary byte chunks (events and even UTF-8 characters may be split across
    chunks) and returns whatever complete client events it can emit now (possibly ``b""``).
    ``finish`` is called once when the provider stream ended and returns the tail (e.g. the
    final usage chunk and ``data: [DONE]``); if the provider stream ended without its terminal
    event, ``finish`` emits a terminal error event in the client's format.
    """

    usage: Usage | None

    @property
    def done(self) -> bool:
        """The client's terminal event has been emitted: nothing more will follow."""
        ...

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Translator(Protocol):
    inbound: Api
    upstream: Api

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        """Client request body (already parsed) -> provider request for upstream ``model``.

        Raises :class:`sidegate.errors.GatewayError` (status 400) for parameters that cannot be
        expressed upstream; never drops them silently.
        """
        ...

    def response(self, body: bytes, *, model: str = "") -> tuple[bytes, Usage | None]:
        """Provider non-streaming success body -> client body, plus the usage it reported.
        `model`: the provider-side model this try asked for, for an answer that names none
        (Bedrock's Converse)."""
        ...

    def stream(self, *, client_wants_usage: bool, model: str = "") -> StreamTranslator:
        """A fresh streaming state for one response (`model`: as for :meth:`response`)."""
        ...

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        """Provider error (status, body) -> (status for the client, body in the client's format)."""
        ...

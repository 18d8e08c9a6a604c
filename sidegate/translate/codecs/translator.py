"""Any cross-API translator as one client codec + one provider codec (the ``Translator`` protocol).

A codec package per API holds ``request.py`` (``decode_request`` / ``encode_request``) and
``response.py`` (``decode_response`` / ``encode_response``, a ``StreamDecoder`` and a stream
encoder). The tables below are the one place an API is registered; same-API routes never come
here (they are passthroughs: see ``sidegate.translate.get_translator``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from sidegate.errors import Api
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.codecs.anthropic import request as anthropic_request
from sidegate.translate.codecs.anthropic import response as anthropic_response
from sidegate.translate.codecs.gemini import request as gemini_request
from sidegate.translate.codecs.gemini import response as gemini_response
from sidegate.translate.codecs.openai import request as openai_request
from sidegate.translate.codecs.openai import response as openai_response
from sidegate.translate.codecs.responses import request as responses_request
from sidegate.translate.codecs.responses import response as responses_response
from sidegate.translate.common import bad_response, client_error, dumps, loads_object

# One request codec and one response codec per API: the whole cost of adding an API.
REQUESTS: dict[Api, ModuleType] = {Api.OPENAI: openai_request, Api.ANTHROPIC: anthropic_request}
RESPONSES: dict[Api, ModuleType] = {Api.OPENAI: openai_response, Api.ANTHROPIC: anthropic_response}
REQUESTS[Api.RESPONSES] = responses_request  # clients of it: codecs.responses_client
RESPONSES[Api.RESPONSES] = responses_response
REQUESTS[Api.GEMINI] = gemini_request
RESPONSES[Api.GEMINI] = gemini_response


def _encoder(api: Api, wants_usage: bool, created: int) -> Any:
    """The client's stream encoder (only OpenAI's reads usage wishes and the clock)."""
    if api is Api.OPENAI:
        return openai_response.OpenAIStreamEncoder(client_wants_usage=wants_usage, created=created)
    if api is Api.GEMINI:
        return gemini_response.GeminiStreamEncoder()
    return anthropic_response.AnthropicStreamEncoder()


class CanonicalStream:
    """Provider SSE -> form events (the provider codec's decoder) -> client SSE (the client's encoder)."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self, decoder: Any, encoder: Any) -> None:
        self._decoder = decoder
        self._encoder = encoder

    @property
    def usage(self) -> Usage | None:
        return self._decoder.usage

    @property
    def done(self) -> bool:
        return self._decoder.done

    def feed(self, chunk: bytes) -> bytes:
        return self._encoder.encode(self._decoder.feed(chunk))

    def finish(self) -> bytes:
        return self._encoder.encode(self._decoder.finish())


class CanonicalTranslator:
    """The translator between two different APIs. ``clock`` gives OpenAI's ``created`` (seconds);
    injectable so tests are deterministic."""

    def __init__(self, inbound: Api, upstream: Api, clock: Callable[[], int] | None = None) -> None:
        self.inbound = inbound
        self.upstream = upstream
        self._decode_request = REQUESTS[inbound].decode_request
        self._encode_request = REQUESTS[upstream].encode_request
        self._decode_response = RESPONSES[upstream].decode_response
        self._encode_response = RESPONSES[inbound].encode_response
        self._stream_decoder = RESPONSES[upstream].StreamDecoder
        self.clock = clock or (lambda: int(time.time()))

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        req = self._decode_request(body)
        if opts.stream is not None:
            req.stream = opts.stream
        return self._encode_request(req, model, opts)

    def response(self, body: bytes) -> tuple[bytes, Usage | None]:
        obj = loads_object(body)
        if obj is None:
            raise bad_response()
        resp = self._decode_response(obj)
        return dumps(self._encode_response(resp, self.clock())), resp.usage

    def stream(self, *, client_wants_usage: bool) -> CanonicalStream:
        encoder = _encoder(self.inbound, client_wants_usage, self.clock())
        return CanonicalStream(self._stream_decoder(), encoder)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return client_error(self.inbound, status, body)

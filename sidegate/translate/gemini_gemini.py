"""Pair: Gemini API client -> Gemini API provider (Google AI or Vertex AI).

Same API: the client's body goes through as sent (the model and the stream flag are in the path,
so nothing in the body changes); the provider's bytes go back untouched, usage read on the side.
Gemini's stream has no terminal event: it is complete at the event holding a ``finishReason`` and
``usageMetadata`` (or at the end of the connection after a ``finishReason``); usage rides on the
last events, so only the last one holding ``usageMetadata`` is parsed, when the usage is read.
"""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api
from sidegate.sse import SseParser
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.codecs.gemini.request import provider_path
from sidegate.translate.codecs.gemini.shapes import parse_usage
from sidegate.translate.common import (
    MALFORMED_EVENT,
    STREAM_TRUNCATED,
    dumps,
    loads_object,
    looks_like_object,
    passthrough_error,
    provider_object,
    sse_error_event,
)

__all__ = ["GeminiGemini", "GeminiGeminiStream"]


class GeminiGeminiStream:
    """Relays whole events; a malformed event or a cut stream ends with Google's error chunk."""

    __slots__ = ("_done", "_finished", "_parser", "_usage", "_usage_data")

    def __init__(self) -> None:
        self._parser = SseParser()
        self._done = False
        self._finished = False  # an event carried a finishReason: the answer is complete
        self._usage_data: bytes | None = None
        self._usage: Usage | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def usage(self) -> Usage | None:
        data = self._usage_data
        if data is not None:  # parsed once, when read (the last usage is the total)
            self._usage_data = None
            obj = loads_object(data)
            if obj is not None:
                self._usage = parse_usage(obj.get("usageMetadata"))[0] or self._usage
        return self._usage

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        events = self._parser.feed(chunk)
        if not events:
            return b""
        out: list[bytes] = []
        for ev in events:
            data = ev.data
            if not data.strip():
                continue  # an empty keep-alive event: clients cannot parse it
            if not looks_like_object(data):
                self._done = True
                out.append(sse_error_event(Api.GEMINI, MALFORMED_EVENT))
                break
            if data.startswith(b'{"error"'):
                self._done = True  # an in-stream error is terminal
                out.append(ev.raw)
                break
            has_usage = b'"usageMetadata"' in data
            if has_usage:
                self._usage_data = data
            if b'"finishReason"' in data:
                self._finished = True
            out.append(ev.raw)
            if self._finished and has_usage:
                self._done = True  # the last event: finish reason and usage (nothing may follow)
                break
        return out[0] if len(out) == 1 else b"".join(out)

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        return b"" if self._finished else sse_error_event(Api.GEMINI, STREAM_TRUNCATED)


class GeminiGemini:
    inbound = Api.GEMINI
    upstream = Api.GEMINI

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        return ProviderRequest(provider_path(model, bool(opts.stream)), dumps(body), {})

    def response(self, body: bytes) -> tuple[bytes, Usage | None]:
        obj = provider_object(body)
        return body, parse_usage(obj.get("usageMetadata"))[0]

    def stream(self, *, client_wants_usage: bool) -> GeminiGeminiStream:
        return GeminiGeminiStream()

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return passthrough_error(Api.GEMINI, status, body)

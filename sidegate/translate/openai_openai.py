"""Pair: OpenAI Chat Completions client -> OpenAI Chat Completions (or OpenAI-compatible) provider.

Same API: the body goes through (model rewritten, usage asked for), usage is read on the side.
Stream events are forwarded as the provider's bytes (normalised line endings); only complete events
are forwarded, so a stream cut mid-event can still be closed with a clean terminal error event.
"""

from __future__ import annotations

import re
from typing import Any

from sidegate.errors import Api
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.common import (
    MALFORMED_EVENT,
    dumps,
    loads_object,
    looks_like_object,
    passthrough_error,
    provider_object,
    sse_error_event,
)
from sidegate.translate.passthrough import PassthroughStream
from sidegate.translate.usage import parse_openai_usage

__all__ = ["OpenAIOpenAI", "OpenAIOpenAIStream"]

_USAGE_NULL = re.compile(rb'"usage"\s*:\s*null')


class OpenAIOpenAIStream(PassthroughStream):
    __slots__ = ("_strip",)

    def __init__(self, *, client_wants_usage: bool) -> None:
        super().__init__()
        self._strip = not client_wants_usage  # a usage chunk then came from force_upstream_usage

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""  # nothing may follow the terminal event
        events = self._parser.feed(chunk)
        if not events:
            return b""
        out: list[bytes] = []
        for ev in events:
            if self._done:
                break
            data = ev.data
            if data == b"[DONE]":
                self._done = True
            elif not data.strip():
                continue  # an empty keep-alive event: clients cannot parse it, drop it
            elif not looks_like_object(data):  # never relay a broken event: end the stream cleanly
                self._done = True
                out.append(self._error_event(MALFORMED_EVENT))
                break
            elif b'"usage"' in data and b'"usage":null' not in data and not _USAGE_NULL.search(data):
                obj = loads_object(data)
                if obj is not None and isinstance(obj.get("usage"), dict):
                    self.usage = parse_openai_usage(obj["usage"])
                    if self._strip:
                        if not obj.get("choices"):
                            continue  # the usage-only chunk the client did not ask for
                        del obj["usage"]
                        out.append(b"data: " + dumps(obj) + b"\n\n")
                        continue
            elif data.startswith(b'{"error"'):
                self._done = True  # an in-stream error is terminal
            out.append(ev.raw)
        return out[0] if len(out) == 1 else b"".join(out)

    def _error_event(self, message: str) -> bytes:
        return sse_error_event(Api.OPENAI, message, "server_error")


class OpenAIOpenAI:
    inbound = Api.OPENAI
    upstream = Api.OPENAI

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        out = body
        if body.get("model") != model:
            out = {**body, "model": model}
        if body.get("stream") and opts.force_upstream_usage:
            so = body.get("stream_options") or {}
            if not so.get("include_usage"):
                out = {**out, "stream_options": {**so, "include_usage": True}}
        return ProviderRequest("/v1/chat/completions", dumps(out), {})

    def response(self, body: bytes, *, model: str = "") -> tuple[bytes, Usage | None]:
        obj = provider_object(body)
        return body, parse_openai_usage(obj.get("usage"))

    def stream(self, *, client_wants_usage: bool, model: str = "") -> OpenAIOpenAIStream:
        return OpenAIOpenAIStream(client_wants_usage=client_wants_usage)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return passthrough_error(Api.OPENAI, status, body)

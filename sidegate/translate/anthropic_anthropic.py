"""Pair: Anthropic Messages client -> Anthropic Messages provider.

Same API: the body goes through (model rewritten), usage is read on the side. Stream events are
forwarded as the provider's bytes (normalised line endings); only complete events are forwarded,
so a stream cut mid-event can still be closed with a clean terminal error event.
"""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api
from sidegate.sse import SseParser
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.codecs.anthropic.request import messages_request
from sidegate.translate.common import (
    MALFORMED_EVENT,
    STREAM_TRUNCATED,
    as_count,
    as_dict,
    dumps,
    loads_object,
    looks_like_object,
    passthrough_error,
    provider_object,
    sse_error_event,
)
from sidegate.translate.usage import ANTHROPIC_USAGE_KEYS, parse_anthropic_usage

__all__ = ["AnthropicAnthropic", "AnthropicAnthropicStream"]


class AnthropicAnthropicStream:
    __slots__ = ("_done", "_parser", "_raw", "usage")

    def __init__(self) -> None:
        self._parser = SseParser()
        self._done = False
        self._raw: dict[str, int] = {}
        self.usage: Usage | None = None

    def _take_usage(self, u: Any) -> None:
        if not isinstance(u, dict):
            return
        for key in ANTHROPIC_USAGE_KEYS:
            value = u.get(key)
            if isinstance(value, int):
                self._raw[key] = as_count(value)  # message_delta counters are cumulative: the last one wins
        self.usage = parse_anthropic_usage(self._raw)

    @property
    def done(self) -> bool:
        """The terminal event (the provider's, or an error event) has been emitted."""
        return self._done

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""  # nothing may follow the terminal event
        events = self._parser.feed(chunk)
        if not events:
            return b""
        events = [ev for ev in events if ev.data.strip()]  # drop empty keep-alive events
        for n, ev in enumerate(events, 1):
            if not looks_like_object(ev.data):  # never relay a broken event: end the stream cleanly
                self._done = True
                head = b"".join(e.raw for e in events[: n - 1])
                return head + sse_error_event(Api.ANTHROPIC, MALFORMED_EVENT, "api_error")
            name = ev.event
            if name is None:  # no `event:` line: look at the payload type
                obj = loads_object(ev.data) or {}
                name = obj.get("type")
            if name == "message_start":
                self._take_usage(as_dict((loads_object(ev.data) or {}).get("message")).get("usage"))
            elif name == "message_delta":
                self._take_usage((loads_object(ev.data) or {}).get("usage"))
            elif name in ("message_stop", "error"):
                self._done = True
                events = events[:n]
                break
        return events[0].raw if len(events) == 1 else b"".join(ev.raw for ev in events)

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        return sse_error_event(Api.ANTHROPIC, STREAM_TRUNCATED, "api_error")


class AnthropicAnthropic:
    inbound = Api.ANTHROPIC
    upstream = Api.ANTHROPIC

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        if opts.anthropic_body_version is not None:  # Anthropic on Vertex AI: the model is in the path
            return messages_request({k: v for k, v in body.items() if k != "model"}, opts)
        out = body if body.get("model") == model else {**body, "model": model}
        return ProviderRequest("/v1/messages", dumps(out), {"anthropic-version": opts.anthropic_version})

    def response(self, body: bytes, *, model: str = "") -> tuple[bytes, Usage | None]:
        obj = provider_object(body)
        u = obj.get("usage")
        if not isinstance(u, dict):
            return body, None
        raw = {k: v for k, v in u.items() if isinstance(v, int)}
        return body, parse_anthropic_usage(raw)

    def stream(self, *, client_wants_usage: bool, model: str = "") -> AnthropicAnthropicStream:
        return AnthropicAnthropicStream()

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return passthrough_error(Api.ANTHROPIC, status, body)

"""Same-API routes: the body goes through (model rewritten), usage is read on the side.

Stream events are forwarded as the provider's bytes (normalised line endings); only complete events
are forwarded, so a stream cut mid-event can still be closed with a clean terminal error event.
"""

from __future__ import annotations

import re
from typing import Any

from sidegate.errors import Api, GatewayError
from sidegate.sse import SseParser
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.common import (
    MALFORMED_EVENT,
    STREAM_TRUNCATED,
    as_count,
    as_dict,
    client_error,
    dumps,
    loads_object,
    parse_provider_error,
    sse_error_event,
)

__all__ = ["AnthropicPassthrough", "OpenAIPassthrough"]


def parse_openai_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    prompt = as_count(u.get("prompt_tokens"))
    cached = as_count(as_dict(u.get("prompt_tokens_details")).get("cached_tokens"))
    return Usage(
        input_tokens=prompt,
        output_tokens=as_count(u.get("completion_tokens")),
        cached_tokens=min(cached, prompt),  # cached tokens are a part of the prompt tokens
    )


def parse_anthropic_usage(raw: dict[str, int]) -> Usage:
    read = as_count(raw.get("cache_read_input_tokens"))
    created = as_count(raw.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=as_count(raw.get("input_tokens")) + read + created,
        output_tokens=as_count(raw.get("output_tokens")),
        cached_tokens=read,
        cache_creation_tokens=created,
    )


def _passthrough_error(api: Api, status: int, body: bytes) -> tuple[int, bytes]:
    """The provider's own error body when it is well-formed, else a generic one in the same format."""
    message, etype = parse_provider_error(body)
    obj = loads_object(body)
    well_formed = (
        message is not None
        and bool(etype)
        and obj is not None
        and isinstance(obj.get("error"), dict)
        and (api is not Api.ANTHROPIC or obj.get("type") == "error")
    )
    if well_formed and 400 <= status <= 599:
        return status, body
    return client_error(api, status, body)


# ---------------------------------------------------------------------------------------- OpenAI

_USAGE_NULL = re.compile(rb'"usage"\s*:\s*null')


def _looks_like_object(data: bytes) -> bool:
    """A cheap structural check (no parse) that an SSE payload is a JSON object."""
    d = data.strip()
    return d[:1] == b"{" and d[-1:] == b"}"


class OpenAIPassthroughStream:
    __slots__ = ("_done", "_parser", "_strip", "usage")

    def __init__(self, *, client_wants_usage: bool) -> None:
        self._parser = SseParser()
        self._strip = not client_wants_usage  # a usage chunk then came from force_upstream_usage
        self._done = False
        self.usage: Usage | None = None

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
        out: list[bytes] = []
        for ev in events:
            if self._done:
                break
            data = ev.data
            if data == b"[DONE]":
                self._done = True
            elif not data.strip():
                continue  # an empty keep-alive event: clients cannot parse it, drop it
            elif not _looks_like_object(data):  # never relay a broken event: end the stream cleanly
                self._done = True
                out.append(sse_error_event(Api.OPENAI, MALFORMED_EVENT, "server_error"))
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

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        return sse_error_event(Api.OPENAI, STREAM_TRUNCATED, "server_error")


class OpenAIPassthrough:
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

    def response(self, body: bytes) -> tuple[bytes, Usage | None]:
        obj = loads_object(body)
        if obj is None:  # never hand the client a 200 with a broken body
            raise GatewayError(502, "The provider returned an invalid (non-JSON) response.")
        return body, parse_openai_usage(obj.get("usage"))

    def stream(self, *, client_wants_usage: bool) -> OpenAIPassthroughStream:
        return OpenAIPassthroughStream(client_wants_usage=client_wants_usage)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return _passthrough_error(Api.OPENAI, status, body)


# ------------------------------------------------------------------------------------- Anthropic


class AnthropicPassthroughStream:
    __slots__ = ("_done", "_parser", "_raw", "usage")

    def __init__(self) -> None:
        self._parser = SseParser()
        self._done = False
        self._raw: dict[str, int] = {}
        self.usage: Usage | None = None

    def _take_usage(self, u: Any) -> None:
        if not isinstance(u, dict):
            return
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ):
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
            if not _looks_like_object(ev.data):  # never relay a broken event: end the stream cleanly
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


class AnthropicPassthrough:
    inbound = Api.ANTHROPIC
    upstream = Api.ANTHROPIC

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        out = body if body.get("model") == model else {**body, "model": model}
        return ProviderRequest("/v1/messages", dumps(out), {"anthropic-version": opts.anthropic_version})

    def response(self, body: bytes) -> tuple[bytes, Usage | None]:
        obj = loads_object(body)
        if obj is None:  # never hand the client a 200 with a broken body
            raise GatewayError(502, "The provider returned an invalid (non-JSON) response.")
        u = obj.get("usage")
        if not isinstance(u, dict):
            return body, None
        raw = {k: v for k, v in u.items() if isinstance(v, int)}
        return body, parse_anthropic_usage(raw)

    def stream(self, *, client_wants_usage: bool) -> AnthropicPassthroughStream:
        return AnthropicPassthroughStream()

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return _passthrough_error(Api.ANTHROPIC, status, body)

"""Pair: OpenAI Responses client -> OpenAI Responses provider (same API: the passthrough).

The client's body goes through with the model rewritten; the provider's answer and stream bytes
are untouched. Usage is read from the answer's ``usage`` and from the stream's terminal event
(``response.completed`` / ``response.incomplete``) without re-encoding any event. Only complete
events are forwarded, so a stream cut mid-event is closed with a clean ``error`` event.
"""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api
from sidegate.sse import encode_event
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.codecs.responses.shapes import parse_responses_usage
from sidegate.translate.common import (
    MALFORMED_EVENT,
    dumps,
    loads_object,
    looks_like_object,
    passthrough_error,
    provider_object,
)
from sidegate.translate.passthrough import PassthroughStream

__all__ = ["ResponsesResponses", "ResponsesResponsesStream", "responses_error_event"]

# The events that end a Responses stream: the answer's (with usage) and the failures.
_USAGE_ENDS = frozenset({"response.completed", "response.incomplete"})
_FAILURE_ENDS = frozenset({"response.failed", "error"})


def responses_error_event(message: str, sequence_number: int, code: str = "server_error") -> bytes:
    """A terminal ``error`` event: flat as the API reference documents it, plus the nested
    ``error`` object the live API sends (on which the ``openai`` SDK raises ``APIError``)."""
    error = {"type": "server_error", "code": code, "message": message, "param": None}
    body = {"type": "error", "code": code, "message": message, "param": None, "error": error}
    body["sequence_number"] = sequence_number
    return encode_event("error", dumps(body))


class ResponsesResponsesStream(PassthroughStream):
    __slots__ = ("_count",)

    def __init__(self) -> None:
        super().__init__()
        self._count = 0  # events forwarded: the provider numbers its events from 0, one by one

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
                continue  # an empty keep-alive event: clients cannot parse it, drop it
            if not looks_like_object(data):
                self._done = True
                out.append(self._error_event(MALFORMED_EVENT))
                break
            obj = None
            kind = ev.event  # OpenAI names every event in its `event:` line: no parse for most
            if kind is None:  # a provider without event lines: the type is in the data only
                obj = loads_object(data)
                kind = obj.get("type") if obj is not None else None
            if kind in _USAGE_ENDS:
                self._done = True
                obj = obj or loads_object(data)
                resp = obj.get("response") if obj is not None else None
                parsed = parse_responses_usage(resp.get("usage")) if isinstance(resp, dict) else None
                if parsed is not None:
                    self.usage = parsed[0]
            elif kind in _FAILURE_ENDS:
                self._done = True
            out.append(ev.raw)
            self._count += 1
            if self._done:
                break
        return out[0] if len(out) == 1 else b"".join(out)

    def _error_event(self, message: str) -> bytes:
        return responses_error_event(message, self._count)


class ResponsesResponses:
    inbound = Api.RESPONSES
    upstream = Api.RESPONSES

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        out = body if body.get("model") == model else {**body, "model": model}
        return ProviderRequest("/v1/responses", dumps(out), {})

    def response(self, body: bytes, *, model: str = "") -> tuple[bytes, Usage | None]:
        obj = provider_object(body)
        parsed = parse_responses_usage(obj.get("usage"))
        return body, (parsed[0] if parsed is not None else None)

    def stream(self, *, client_wants_usage: bool, model: str = "") -> ResponsesResponsesStream:
        return ResponsesResponsesStream()

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return passthrough_error(Api.RESPONSES, status, body)

"""Gemini's ``streamGenerateContent?alt=sse`` <-> form events.

Every SSE event is a whole ``GenerateContentResponse`` holding the next parts; usage rides on the
last ones (cumulative), the finish reason on the last, and there is no terminal ``[DONE]``: the
answer is complete at the event holding both a finish reason and usage (or at the end of the
connection after a finish reason). A stream that ends before a finish reason was cut.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import (
    END,
    End,
    Event,
    Failure,
    Start,
    Stop,
    TextDelta,
    ThinkingDelta,
    ToolDelta,
    ToolStart,
    UsageUpdate,
)
from sidegate.translate.codecs.gemini.shapes import (
    FAILED_FINISHES,
    FINISH_OUT,
    block_reason,
    call_id,
    failed_message,
    finish_in,
    gemini_usage,
    parse_usage,
    tool_args,
)
from sidegate.translate.codecs.util import JsonEventDecoder, stream_error
from sidegate.translate.common import STREAM_TRUNCATED, as_str, dumps

__all__ = ["GeminiStreamDecoder", "GeminiStreamEncoder", "error_kind"]


def error_kind(code: Any) -> str:
    """An in-stream Google error's ``code`` -> the form's failure kind."""
    return "rate_limit" if code == 429 else "invalid_request" if code == 400 else "server"


class GeminiStreamDecoder(JsonEventDecoder):
    """Gemini SSE -> form events: one JSON parse per event (the SSE loop is ``JsonEventDecoder``'s);
    a function call arrives whole, so it is one ``ToolStart`` with all its arguments."""

    __slots__ = ("_generated", "_id", "_ntools", "_started", "_stopped")

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._stopped = False
        self._generated = False
        self._ntools = 0
        self._id = ""

    def _event(self, obj: dict[str, Any], out: list[Event]) -> None:
        err = obj.get("error")
        if err is not None:  # an in-stream error is terminal
            self.done = True
            err = err if type(err) is dict else {}
            message = as_str(err.get("message")) or "The upstream provider failed."
            out.append(Failure(message, error_kind(err.get("code"))))
            return
        if not self._started:
            self._started = True
            self._id = as_str(obj.get("responseId"))
            out.append(Start(self._id, as_str(obj.get("modelVersion"))))
        candidates = obj.get("candidates")
        cand = candidates[0] if type(candidates) is list and candidates else None
        reason = None
        if type(cand) is dict:
            content = cand.get("content")
            parts = content.get("parts") if type(content) is dict else None
            if type(parts) is list:
                self._parts(parts, out)
            reason = cand.get("finishReason")
        usage = obj.get("usageMetadata")
        if usage is not None:
            parsed, thinking = parse_usage(usage)
            if parsed is not None:  # a malformed one does not erase the usage so far
                self.usage = parsed
                out.append(UsageUpdate(parsed, thinking))
        if type(reason) is str and reason and not self._stopped:
            self._stopped = True
            if reason in FAILED_FINISHES and not self._generated:
                self.done = True
                out.append(Failure(failed_message(reason)))
                return
            out.append(Stop(finish_in(reason, self._ntools > 0), None))
        elif cand is None and not self._stopped and block_reason(obj):
            self._stopped = True
            out.append(Stop("refusal", None))
        if self._stopped and usage is not None:
            # Gemini's last event carries the finish reason and the usage: the answer is complete,
            # so the client's terminal event goes now, not when the connection closes. (Without
            # usage yet, a later event may bring it: the end then waits for it or for EOF.)
            self.done = True
            out.append(END)

    def _parts(self, parts: list[Any], out: list[Event]) -> None:
        for part in parts:
            if type(part) is not dict:
                continue
            text = part.get("text")
            if type(text) is str:
                if text:
                    self._generated = True
                    out.append(ThinkingDelta(text) if part.get("thought") is True else TextDelta(text))
                continue
            fc = part.get("functionCall")
            if type(fc) is dict:
                self._generated = True
                idx = self._ntools
                self._ntools += 1
                args = orjson.dumps(tool_args(fc.get("args"))).decode()
                out.append(ToolStart(idx, call_id(fc.get("id"), self._id, idx), as_str(fc.get("name")), args))

    def finish(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        return [END] if self._stopped else [Failure(STREAM_TRUNCATED)]


_PREFIX = b'data: {"candidates":[{"content":{"role":"model","parts":['


class GeminiStreamEncoder:
    """Form events -> Gemini SSE for a Gemini client: one event per text or thought delta (a
    prefix and suffix serialised once per stream around one small ``dumps``); a function call is
    held until its arguments are complete (Gemini sends each call whole); the finish reason and
    usage go in a final event."""

    __slots__ = ("_calls", "_id", "_model", "_stop", "_suffix", "_thinking", "_usage")

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # tool call index -> [id, name, argument pieces...]
        self._stop = "STOP"
        self._usage: Usage | None = None
        self._thinking: int | None = None
        self._head("", "")

    def _head(self, msg_id: str, model: str) -> None:
        self._id, self._model = msg_id, model
        tail = b'"modelVersion":' + dumps(model) + b',"responseId":' + dumps(msg_id) + b"}\n\n"
        self._suffix = b']},"index":0}],' + tail

    def _call_parts(self) -> list[dict[str, Any]]:
        parts = []
        for entry in self._calls.values():
            text = "".join(entry[2:]) or "{}"
            try:
                args = orjson.loads(text)
            except orjson.JSONDecodeError:
                args = None
            if not isinstance(args, dict):
                args = {"_raw_arguments": text}
            parts.append({"functionCall": {"id": entry[0], "name": entry[1], "args": args}})
        self._calls = {}
        return parts

    def _flush(self) -> bytes:
        parts = self._call_parts()
        return _PREFIX + dumps(parts)[1:-1] + self._suffix

    def encode(self, events: list[Event]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            t = type(ev)
            if t is TextDelta or t is ThinkingDelta:
                if self._calls:
                    out.append(self._flush())
                part = {"text": ev.text} if t is TextDelta else {"text": ev.text, "thought": True}  # type: ignore[union-attr]
                out.append(_PREFIX + dumps(part) + self._suffix)
            elif t is ToolDelta:
                entry = self._calls.get(ev.index)  # type: ignore[union-attr]
                if entry is not None:
                    entry.append(ev.arguments)  # type: ignore[union-attr]
            elif t is ToolStart:
                self._calls[ev.index] = [ev.id or f"call_{ev.index}", ev.name, ev.arguments]  # type: ignore[union-attr]
            elif t is UsageUpdate:
                self._usage, self._thinking = ev.usage, ev.thinking_tokens  # type: ignore[union-attr]
            elif t is Stop:
                self._stop = FINISH_OUT[ev.reason]  # type: ignore[union-attr]
            elif t is Start:
                self._head(ev.id, ev.model)  # type: ignore[union-attr]
            elif t is End:
                out.append(self._end())
            elif t is Failure:
                out.append(stream_error(Api.GEMINI, ev.message, ev.kind))  # type: ignore[union-attr]
        return b"".join(out)

    def _end(self) -> bytes:
        parts = self._call_parts() or [{"text": ""}]
        final = {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": self._stop, "index": 0}
            ],
            "usageMetadata": gemini_usage(self._usage or Usage(), self._thinking),
            "modelVersion": self._model,
            "responseId": self._id,
        }
        return b"data: " + dumps(final) + b"\n\n"

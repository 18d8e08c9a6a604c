"""Restore placeholders in OpenAI Responses API answers: the JSON `response` object and its SSE stream.

JSON: every string of the response gets its original values back (function call `arguments`, JSON
text themselves, get them JSON-escaped), except reasoning items: they are the provider's own words
(encrypted or signed; a client sends them back as they came), as Anthropic thinking is left alone.

Stream: each text channel (an output text part, a refusal part, a function call's arguments, a
custom tool call's input) has
its own :class:`StreamRestorer`, so a placeholder split across `*.delta` events is put back whole.
A channel's held-back tail (only a possible placeholder prefix) is released as one more delta right
before the channel's `*.done` event; the events after it get their `sequence_number` shifted so the
numbering stays gapless and increasing. The `*.done` events, `response.content_part.done`,
`response.output_item.done` and the `response` object of `response.created` / `.completed` /
`.incomplete` / `.failed` carry whole texts, restored in one piece. Events without `<` pass through
byte for byte while nothing is held back and nothing was inserted.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.features.guard.restore import (
    SseEventRestorer,
    StreamRestorer,
    json_escaped,
    restore_body,
    restore_obj,
    restore_text,
)
from sidegate.sse import SseEvent, encode_event
from sidegate.translate.common import loads_object

__all__ = ["ResponsesSseRestorer", "restore_response", "restore_responses_body"]

_Key = tuple[Any, ...]

_DELTAS: dict[str, str] = {
    "response.output_text.delta": "text",
    "response.refusal.delta": "refusal",
    "response.function_call_arguments.delta": "args",
    "response.custom_tool_call_input.delta": "custom",
}
"""Delta event type -> channel kind."""
_DONES: dict[str, tuple[str, str]] = {
    "response.output_text.done": ("text", "text"),
    "response.refusal.done": ("refusal", "refusal"),
    "response.function_call_arguments.done": ("args", "arguments"),
    "response.custom_tool_call_input.done": ("custom", "input"),
}
"""Done event type -> (channel kind, the field holding the whole text)."""
_PARTS = frozenset({"text", "refusal"})
"""Channels of a message's content part (keyed by output and content index; the others by output index)."""
_WHOLE_RESPONSE = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


def restore_response(obj: Any, mapping: dict[str, str]) -> Any:
    """A Responses `response` object (or any other JSON value) with placeholders restored in place,
    reasoning items excepted."""
    if not mapping or not isinstance(obj, dict):
        return restore_obj(obj, mapping)
    for key, value in obj.items():
        if key == "output" and isinstance(value, list):
            for i, item in enumerate(value):
                if not (isinstance(item, dict) and item.get("type") == "reasoning"):
                    value[i] = restore_obj(item, mapping)
        elif isinstance(value, str | dict | list):
            obj[key] = restore_obj(value, mapping)
    return obj


def restore_responses_body(body: bytes, mapping: dict[str, str]) -> bytes:
    """A non-streaming Responses answer with placeholders restored; bodies without any placeholder
    are returned as they are (no re-serialisation)."""
    return restore_body(body, mapping, restore_response)


class _Channel:
    """One text channel of the stream and the fields of its last delta (to write a released one)."""

    __slots__ = ("restorer", "template")

    def __init__(self, restorer: StreamRestorer) -> None:
        self.restorer = restorer
        self.template: dict[str, Any] = {}


class ResponsesSseRestorer(SseEventRestorer):
    """Responses SSE bytes in (any split), the same stream out with original values restored."""

    def __init__(self, mapping: dict[str, str]) -> None:
        super().__init__(mapping)
        self._escaped: dict[str, str] | None = None
        self._channels: dict[_Key, _Channel] = {}
        self._shift = 0
        """Events inserted so far: every later event's sequence_number moves up by this much."""
        self._last_seq = -1
        """The sequence_number of the last event that went out (parsed ones only)."""

    def _release_all(self) -> bytes:
        """At the end of the stream: everything still held back (a stream cut before its done events)."""
        return self._release(lambda key: True, None)

    # --- channels ------------------------------------------------------------------------------------

    def _channel(self, key: _Key) -> _Channel:
        ch = self._channels.get(key)
        if ch is None:
            if key[0] == "args":  # JSON text: the values go in JSON-escaped
                if self._escaped is None:
                    self._escaped = json_escaped(self._mapping)
                ch = _Channel(StreamRestorer(self._escaped))
            else:
                ch = _Channel(StreamRestorer(self._mapping))
            self._channels[key] = ch
        return ch

    def _pending(self) -> bool:
        return any(ch.restorer.pending for ch in self._channels.values())

    def _release(self, which: Any, seq: Any) -> bytes:
        """One delta event per pending channel `which(key)` accepts, numbered from `seq` (the
        original number of the event they go before; None: after the last event seen)."""
        out: list[bytes] = []
        for key, ch in self._channels.items():
            if not ch.restorer.pending or not which(key):
                continue
            event = dict(ch.template)
            event["delta"] = ch.restorer.flush()
            if key[0] == "text":
                event["logprobs"] = []
            if isinstance(seq, int):
                event["sequence_number"] = seq + self._shift
                self._shift += 1
            elif "sequence_number" in event:  # after the last event
                self._last_seq += 1
                event["sequence_number"] = self._last_seq
            out.append(encode_event(str(event.get("type")), orjson.dumps(event)))
        return b"".join(out)

    # --- per event -----------------------------------------------------------------------------------

    def _event(self, ev: SseEvent) -> bytes:
        data = ev.data
        if not data.startswith(b"{"):
            return ev.raw
        if not self._shift and b"<" not in data and b"\\u003c" not in data and not self._pending():
            return ev.raw
        obj = loads_object(data)
        if obj is None:
            return ev.raw
        etype = obj.get("type")
        seq = obj.get("sequence_number")
        before = b""
        kind = _DELTAS.get(etype) if isinstance(etype, str) else None
        if kind is not None:
            if isinstance(obj.get("delta"), str):
                key = (kind, obj.get("output_index"), obj.get("content_index") if kind in _PARTS else None)
                ch = self._channel(key)
                ch.template = {k: v for k, v in obj.items() if k not in ("delta", "logprobs", "obfuscation")}
                obj["delta"] = ch.restorer.feed(obj["delta"])
        elif etype in _DONES:
            kind, field = _DONES[etype]
            key = (kind, obj.get("output_index"), obj.get("content_index") if kind in _PARTS else None)
            before = self._release(lambda k: k == key, seq)
            if isinstance(obj.get(field), str):
                obj[field] = restore_text(obj[field], self._escaped_for(kind))
        elif etype == "response.content_part.done":
            oi, ci = obj.get("output_index"), obj.get("content_index")
            before = self._release(lambda k: k[0] in _PARTS and k[1] == oi and k[2] == ci, seq)
            obj["part"] = restore_obj(obj.get("part"), self._mapping)
        elif etype in ("response.output_item.added", "response.output_item.done"):
            oi = obj.get("output_index")
            if etype == "response.output_item.done":
                before = self._release(lambda k: k[1] == oi, seq)
            item = obj.get("item")
            if not (isinstance(item, dict) and item.get("type") == "reasoning"):
                obj["item"] = restore_obj(item, self._mapping)
        elif etype == "response.content_part.added":
            obj["part"] = restore_obj(obj.get("part"), self._mapping)
        elif etype in _WHOLE_RESPONSE or etype == "error":
            if etype in _TERMINAL:
                before = self._release(lambda key: True, seq)
            if "response" in obj:
                obj["response"] = restore_response(obj["response"], self._mapping)
        if isinstance(seq, int):
            if self._shift:
                obj["sequence_number"] = seq + self._shift
            self._last_seq = obj["sequence_number"]
        return before + encode_event(ev.event, orjson.dumps(obj))

    def _escaped_for(self, kind: str) -> dict[str, str]:
        if kind != "args":
            return self._mapping
        if self._escaped is None:
            self._escaped = json_escaped(self._mapping)
        return self._escaped

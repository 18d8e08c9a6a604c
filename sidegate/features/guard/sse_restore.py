"""Restore placeholders in a client-format SSE stream (after translation, before the client).

Each text channel (OpenAI: a choice's ``content``, each tool call's ``arguments``; Anthropic: each
content block's text or ``partial_json``) gets its own :class:`StreamRestorer`, so a placeholder split
across deltas is put back whole. Held-back text is released at the end of its channel (OpenAI: the
chunk carrying ``finish_reason``; Anthropic: a synthetic delta right before ``content_block_stop``).
Thinking deltas are left alone (they are signed by the provider). Events without ``<`` and with
nothing held back pass through byte for byte.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.features.guard.restore import SseEventRestorer, StreamRestorer, json_escaped
from sidegate.sse import SseEvent, encode_event
from sidegate.translate.common import loads_object

_Key = tuple[Any, ...]


class SseRestorer(SseEventRestorer):
    """Client SSE bytes in (any split), client SSE bytes out with original values restored."""

    def __init__(self, api: Api, mapping: dict[str, str]) -> None:
        super().__init__(mapping)
        self.api = api
        self._escaped: dict[str, str] | None = None
        self._channels: dict[_Key, StreamRestorer] = {}
        self._template: dict[str, Any] = {}

    def _channel(self, key: _Key, json_text: bool = False) -> StreamRestorer:
        r = self._channels.get(key)
        if r is None:
            if json_text:
                if self._escaped is None:
                    self._escaped = json_escaped(self._mapping)
                r = StreamRestorer(self._escaped)
            else:
                r = StreamRestorer(self._mapping)
            self._channels[key] = r
        return r

    def _pending(self) -> bool:
        return any(r.pending for r in self._channels.values())

    # --- per event ---------------------------------------------------------------------------------

    def _event(self, ev: SseEvent) -> bytes:
        data = ev.data
        if not data.startswith(b"{"):
            if data.strip() == b"[DONE]":
                return self._release_all() + ev.raw
            return ev.raw
        if b"<" not in data and b"\\u003c" not in data and not self._pending():
            return ev.raw
        obj = loads_object(data)
        if obj is None:
            return ev.raw
        if self.api is Api.ANTHROPIC:
            return self._anthropic(ev, obj)
        return self._openai(ev, obj)

    def _openai(self, ev: SseEvent, obj: dict[str, Any]) -> bytes:
        self._template = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return ev.raw
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            idx = choice.get("index", 0)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), str):
                delta["content"] = self._channel(("c", idx)).feed(delta["content"])
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                        key = ("t", idx, call.get("index", 0))
                        fn["arguments"] = self._channel(key, json_text=True).feed(fn["arguments"])
            if choice.get("finish_reason"):
                self._release_openai_choice(idx, delta)
        return encode_event(ev.event, orjson.dumps(obj))

    def _release_openai_choice(self, idx: Any, delta: dict[str, Any]) -> bool:
        released = False
        for key, r in list(self._channels.items()):
            if key[1] != idx or not r.pending:
                continue
            held = r.flush()
            released = True
            if key[0] == "c":
                delta["content"] = (delta.get("content") or "") + held
            else:
                calls = delta.setdefault("tool_calls", [])
                for call in calls:
                    if isinstance(call, dict) and call.get("index", 0) == key[2]:
                        fn = call.setdefault("function", {})
                        fn["arguments"] = (fn.get("arguments") or "") + held
                        break
                else:
                    calls.append({"index": key[2], "function": {"arguments": held}})
        return released

    def _anthropic(self, ev: SseEvent, obj: dict[str, Any]) -> bytes:
        etype = obj.get("type")
        idx = obj.get("index", 0)
        if etype == "content_block_start":
            block = obj.get("content_block")
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                block["text"] = self._channel(("b", idx)).feed(block["text"])
            return encode_event(ev.event, orjson.dumps(obj))
        if etype == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                    delta["text"] = self._channel(("b", idx)).feed(delta["text"])
                elif delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                    key = ("j", idx)
                    delta["partial_json"] = self._channel(key, json_text=True).feed(delta["partial_json"])
            return encode_event(ev.event, orjson.dumps(obj))
        if etype == "content_block_stop":
            return self._release_anthropic(idx) + ev.raw
        if etype == "message_stop":
            return self._release_all() + ev.raw
        return ev.raw

    def _release_anthropic(self, idx: Any) -> bytes:
        out = b""
        for key in (("b", idx), ("j", idx)):
            r = self._channels.get(key)
            if r is None or not r.pending:
                continue
            held = r.flush()
            if key[0] == "b":
                delta = {"type": "text_delta", "text": held}
            else:
                delta = {"type": "input_json_delta", "partial_json": held}
            out += encode_event(
                "content_block_delta",
                orjson.dumps({"type": "content_block_delta", "index": idx, "delta": delta}),
            )
        return out

    def _release_all(self) -> bytes:
        if not self._pending():
            return b""
        if self.api is Api.ANTHROPIC:
            return b"".join(self._release_anthropic(key[1]) for key in list(self._channels))
        out = b""
        for idx in sorted({key[1] for key, r in self._channels.items() if r.pending}, key=str):
            delta: dict[str, Any] = {}
            self._release_openai_choice(idx, delta)
            chunk = {
                **self._template,
                "choices": [{"index": idx, "delta": delta, "finish_reason": None}],
            }
            chunk.setdefault("object", "chat.completion.chunk")
            out += encode_event(None, orjson.dumps(chunk))
        return out

"""Restore placeholders in a Gemini API client's stream (`streamGenerateContent?alt=sse`).

Each chunk is a whole GenerateContentResponse (`data: {"candidates": [...], "usageMetadata": ...}`,
no event names). A candidate's text parts are one channel (a :class:`StreamRestorer` per candidate
index), so a placeholder split across chunks is put back whole; function calls arrive whole (their
`args` an object) and are restored in place. Held-back text is released on the chunk carrying the
candidate's `finishReason`, or at the end of the stream in one more chunk. Thought parts are left
alone (signed by the provider). Chunks without `<` and with nothing held back pass byte for byte.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.features.guard.restore import SseEventRestorer, StreamRestorer, restore_obj
from sidegate.sse import SseEvent, encode_event
from sidegate.translate.common import loads_object


class GeminiSseRestorer(SseEventRestorer):
    """Client SSE bytes in (any split), client SSE bytes out with original values restored."""

    def __init__(self, mapping: dict[str, str]) -> None:
        super().__init__(mapping)
        self._channels: dict[Any, StreamRestorer] = {}
        self._template: dict[str, Any] = {}

    def _pending(self) -> bool:
        return any(r.pending for r in self._channels.values())

    def _release_all(self) -> bytes:
        """At the end of the stream: anything still held back, in one more chunk."""
        held = [(idx, r.flush()) for idx, r in self._channels.items() if r.pending]
        if not held:
            return b""
        candidates = [
            {"content": {"parts": [{"text": text}], "role": "model"}, "index": idx} for idx, text in held
        ]
        return encode_event(None, orjson.dumps({**self._template, "candidates": candidates}))

    def _event(self, ev: SseEvent) -> bytes:
        data = ev.data
        if not data.startswith(b"{") or (b"<" not in data and b"\\u003c" not in data and not self._pending()):
            return ev.raw
        obj = loads_object(data)
        candidates = obj.get("candidates") if obj is not None else None
        if obj is None or not isinstance(candidates, list):
            return ev.raw
        self._template = {k: obj[k] for k in ("modelVersion", "responseId") if k in obj}
        for cand in candidates:
            if isinstance(cand, dict):
                self._candidate(cand)
        return encode_event(ev.event, orjson.dumps(obj))

    def _candidate(self, cand: dict[str, Any]) -> None:
        idx = cand.get("index", 0)
        if not isinstance(idx, int):  # a passthrough relays the provider's chunk as it came
            idx = 0
        content = cand.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        last_text: dict[str, Any] | None = None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict) or part.get("thought"):
                continue
            if isinstance(part.get("text"), str):
                channel = self._channels.get(idx)
                if channel is None:
                    channel = self._channels[idx] = StreamRestorer(self._mapping)
                part["text"] = channel.feed(part["text"])
                last_text = part
            elif isinstance(part.get("functionCall"), dict):
                restore_obj(part["functionCall"].get("args"), self._mapping)
        channel = self._channels.get(idx)
        if cand.get("finishReason") and channel is not None and channel.pending:
            held = channel.flush()
            if last_text is not None:
                last_text["text"] += held
            else:
                if not isinstance(content, dict):
                    content = cand["content"] = {"role": "model"}
                if not isinstance(content.get("parts"), list):
                    content["parts"] = []
                content["parts"].append({"text": held})

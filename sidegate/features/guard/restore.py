"""Placeholders: allocation per request, and putting the original values back into responses.

A placeholder is ``<ENTITY_N>`` (``<EMAIL_1>``). Within one request the same value always gets the same
placeholder, numbered in order of first appearance, so a conversation's history redacts the same way
on every turn (which also keeps provider prompt caches warm).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from sidegate.config.guard import Entity
from sidegate.sse import SseEvent, SseParser

PLACEHOLDER = re.compile(r"<(" + "|".join(e.value for e in Entity) + r")_(\d{1,6})>")


class Placeholders:
    """Value -> placeholder for one request. Never reuses a placeholder already present in the input."""

    __slots__ = ("_counters", "_reserved", "by_value", "restore_map")

    def __init__(self, reserved: set[str] | None = None) -> None:
        self._counters: dict[Entity, int] = {}
        self._reserved = reserved or set()
        self.by_value: dict[tuple[Entity, str], str] = {}
        self.restore_map: dict[str, str] = {}

    def get(self, entity: Entity, value: str) -> str:
        key = (entity, value)
        ph = self.by_value.get(key)
        if ph is None:
            n = self._counters.get(entity, 0)
            while True:
                n += 1
                ph = f"<{entity.value}_{n}>"
                if ph not in self._reserved:
                    break
            self._counters[entity] = n
            self.by_value[key] = ph
            self.restore_map[ph] = value
        return ph


def reserved_in(texts: list[str]) -> set[str]:
    """Placeholder-shaped strings the client itself wrote (they must keep their literal meaning)."""
    out: set[str] = set()
    for t in texts:
        if "<" in t:
            out.update(m.group() for m in PLACEHOLDER.finditer(t))
    return out


def json_escaped(mapping: dict[str, str]) -> dict[str, str]:
    """The mapping with values escaped for insertion inside a JSON string literal."""
    return {k: orjson.dumps(v).decode()[1:-1] for k, v in mapping.items()}


def restore_text(text: str, mapping: dict[str, str]) -> str:
    """`text` with every known placeholder replaced by its original value."""
    if not mapping or "<" not in text:
        return text
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


def restore_obj(obj: Any, mapping: dict[str, str]) -> Any:
    """Restore placeholders in every string of a JSON-like value, in place where possible.

    Strings under an ``arguments`` key (OpenAI tool-call arguments, themselves JSON text) get the
    values JSON-escaped so they stay valid JSON. Returns the (possibly new) value.
    """
    if not mapping:
        return obj
    escaped: dict[str, str] | None = None

    def walk(o: Any, key: str | None, depth: int) -> Any:
        nonlocal escaped
        if isinstance(o, str):
            if key == "arguments" or key == "partial_json":
                if escaped is None:
                    escaped = json_escaped(mapping)
                return restore_text(o, escaped)
            return restore_text(o, mapping)
        if depth > 64:
            return o
        if isinstance(o, dict):
            for k, v in o.items():
                if isinstance(v, str | dict | list):
                    o[k] = walk(v, k, depth + 1)
        elif isinstance(o, list):
            for i, v in enumerate(o):
                if isinstance(v, str | dict | list):
                    o[i] = walk(v, key, depth + 1)
        return o

    return walk(obj, None, 0)


def restore_body(
    body: bytes, mapping: dict[str, str], restore: Callable[[Any, dict[str, str]], Any] = restore_obj
) -> bytes:
    """A non-streaming JSON response body (client format) with placeholders restored by ``restore``
    (every string by default; the Responses API passes one that spares reasoning items).

    Bodies without any placeholder are returned as is (no re-serialisation)."""
    if not mapping or b"<" not in body:
        return body
    text = body.decode("utf-8", "replace")
    if PLACEHOLDER.search(text) is None:
        return body
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return restore_text(text, mapping).encode()
    return orjson.dumps(restore(obj, mapping))


class StreamRestorer:
    """Restores placeholders in a text that arrives in pieces (one per stream channel).

    ``feed`` returns what can be emitted now; it holds back only a tail that could still become a
    placeholder (at most the longest placeholder's length minus one). ``flush`` returns the rest.
    """

    __slots__ = ("_held", "_keys", "_mapping", "_max")

    def __init__(self, mapping: dict[str, str]) -> None:
        self._mapping = mapping
        self._keys = tuple(mapping)
        self._max = max((len(k) for k in mapping), default=0)
        self._held = ""

    def _hold_from(self, text: str) -> int:
        """Index where a possible placeholder prefix starts at the end of `text`, or len(text)."""
        n = len(text)
        lt = text.rfind("<", max(0, n - self._max + 1))
        if lt < 0:
            return n
        tail = text[lt:]
        if ">" not in tail and any(k.startswith(tail) for k in self._keys):  # a proper prefix
            return lt
        return n

    def feed(self, text: str) -> str:
        if not self._mapping:
            return text
        if self._held:
            text = self._held + text
            self._held = ""
        elif "<" not in text:
            return text
        cut = self._hold_from(text)
        if cut < len(text):
            self._held = text[cut:]
            text = text[:cut]
        return restore_text(text, self._mapping)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    @property
    def pending(self) -> bool:
        return bool(self._held)


class SseEventRestorer:
    """The SSE side every client-stream restorer shares (sse_restore, responses_restore,
    gemini_restore): client SSE bytes in any split, each complete event to the API's ``_event``,
    what is still held back released by the API's ``_release_all`` at the end; with nothing to
    restore, the bytes pass untouched."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self._mapping = mapping
        self._parser = SseParser()

    @property
    def active(self) -> bool:
        return bool(self._mapping)

    def feed(self, chunk: bytes) -> bytes:
        if not self._mapping:
            return chunk
        return b"".join(self._event(ev) for ev in self._parser.feed(chunk))

    def finish(self) -> bytes:
        """End of stream: release anything still held back."""
        if not self._mapping:
            return b""
        self._parser.flush()
        return self._release_all()

    def _event(self, ev: SseEvent) -> bytes:
        raise NotImplementedError

    def _release_all(self) -> bytes:
        raise NotImplementedError

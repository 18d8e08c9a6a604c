"""Incremental Server-Sent Events parser and encoder (the streaming hot path).

The parser works on bytes: events are cut at blank lines, and since a UTF-8 multi-byte sequence
never contains ``\\n`` or ``\\r``, a complete event always holds complete characters even when the
provider split a character across TCP chunks. ``\\r\\n`` and lone ``\\r`` line endings are normalised
to ``\\n`` (so an event's ``raw`` bytes are the normalised form). Comment lines (``:``) are skipped,
multi-line ``data:`` fields are joined with ``\\n`` as the SSE spec says.
"""

from __future__ import annotations

__all__ = ["SseEvent", "SseParser", "encode_data", "encode_event"]


class SseEvent:
    """One dispatched event: ``event`` name (or None), ``data`` bytes, and the ``raw`` event bytes."""

    __slots__ = ("data", "event", "id", "raw")

    def __init__(self, event: str | None, data: bytes, raw: bytes, id: str | None = None) -> None:
        self.event = event
        self.data = data
        self.raw = raw
        self.id = id

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"SseEvent(event={self.event!r}, data={self.data[:80]!r})"


def _parse_block(block: bytes, raw: bytes) -> SseEvent | None:
    """Fields of one event block (no trailing blank line); None if it carries no data."""
    # Fast paths: `data: X` alone, or `event: E\ndata: X` (OpenAI and Anthropic shapes).
    nl = block.find(b"\n")
    if nl < 0:
        if block.startswith(b"data: "):
            return SseEvent(None, block[6:], raw)
    elif (
        block.startswith(b"event: ") and block.startswith(b"data: ", nl + 1) and block.find(b"\n", nl + 1) < 0
    ):
        return SseEvent(block[7:nl].decode("utf-8", "replace"), block[nl + 7 :], raw)
    event: str | None = None
    ev_id: str | None = None
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # empty or ':' comment
            continue
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id":
            ev_id = value.decode("utf-8", "replace")
        # `retry` and unknown fields are ignored, as the spec says.
    if not data_lines:
        return None
    data = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
    return SseEvent(event, data, raw, ev_id)


class SseParser:
    """Bytes in (any split), complete :class:`SseEvent` objects out."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    @property
    def pending(self) -> bool:
        """True when a partial event is buffered (the stream was cut mid-event if it ends now)."""
        return bool(self._buf.strip())

    def feed(self, chunk: bytes) -> list[SseEvent]:
        n = len(chunk)
        if n > 2 and not self._buf and chunk.find(b"\n\n") == n - 2 and b"\r" not in chunk:
            # Hot path: exactly one complete event in this chunk (how providers usually flush).
            ev = _parse_block(chunk[:-2], chunk)
            return [ev] if ev is not None else []
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A trailing '\r' may be the first half of '\r\n': keep it raw until more bytes come.
            tail = b""
            if buf.endswith(b"\r"):
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        events: list[SseEvent] = []
        pos = 0
        find = buf.find
        while True:
            end = find(b"\n\n", pos)
            if end < 0:
                break
            if end > pos:
                ev = _parse_block(buf[pos:end], buf[pos : end + 2])
                if ev is not None:
                    events.append(ev)
            pos = end + 2
            # Extra blank lines between events are empty events: skip them.
            while pos < len(buf) and buf[pos] == 0x0A:
                pos += 1
        self._buf = buf[pos:] if pos else buf
        return events

    def flush(self) -> list[SseEvent]:
        """End of stream: dispatch nothing (an unterminated event is incomplete by the spec)."""
        self._buf = b""
        return []


def encode_data(data: bytes) -> bytes:
    """``data: <data>\\n\\n`` (``data`` must hold no newline, as compact JSON never does)."""
    return b"data: " + data + b"\n\n"


def encode_event(event: str | None, data: bytes | str) -> bytes:
    """A full event; multi-line data is split into several ``data:`` lines."""
    if isinstance(data, str):
        data = data.encode()
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    else:
        body = b"data: " + data + b"\n\n"
    if event is None:
        return body
    return b"event: " + event.encode() + b"\n" + body

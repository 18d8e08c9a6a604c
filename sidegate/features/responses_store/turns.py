"""The turns in flight in this process: what a request's tries and its keeping need that the
gateway learnt before the guard ran (the expanded conversation as the client wrote it), held from
the request hook to the end of the request, bounded in count, bytes and time."""

from __future__ import annotations

import time
from typing import NamedTuple

from sidegate.ids import UniqueIds


class Turn(NamedTuple):
    earlier: bytes | None
    """The kept record `previous_response_id` named, as read: the conversation a try behind the
    HTTP front prepends itself (that front cannot rewrite the body), and the start of what is
    kept; None when there is none or neither needs it."""
    body: bytes | None
    """The client's body as received (before the guard's redaction): the rest of what is kept;
    None when the answer is not to be kept."""
    previous_id: str | None


class Turns:
    """`put` at the request hook, `get` by every try, `pop` when the request ends (kept, or its
    final try failed, or the gateway answered). Past `max_bytes` or `capacity` the oldest go first;
    past `ttl_s` an entry reads as gone (a request never ended: its client went away)."""

    def __init__(self, capacity: int = 4096, max_bytes: int = 256 * 1024 * 1024, ttl_s: float = 900.0):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.bytes = 0
        self.new_key = UniqueIds()
        self._items: dict[str, tuple[float, Turn, int]] = {}  # key -> (expires at, turn, bytes); oldest first

    def __len__(self) -> int:
        return len(self._items)

    def put(self, turn: Turn) -> str | None:
        """The turn's key, or None when it alone is larger than the whole budget."""
        size = len(turn.earlier or b"") + len(turn.body or b"")
        if size > self.max_bytes:
            return None
        key = self.new_key()
        self._items[key] = (time.monotonic() + self.ttl_s, turn, size)
        self.bytes += size
        while len(self._items) > self.capacity or self.bytes > self.max_bytes:
            self.bytes -= self._items.pop(next(iter(self._items)))[2]
        return key

    def get(self, key: str) -> Turn | None:
        item = self._items.get(key)
        if item is None:
            return None
        if time.monotonic() > item[0]:
            self.pop(key)
            return None
        return item[1]

    def pop(self, key: str) -> Turn | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[2]
        return item[1] if time.monotonic() <= item[0] else None

"""A small bounded map whose entries expire: things held for a moment between two calls in the
same process (cache-fill requests for their response, replies for their replay, tries for their
response)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlMap(Generic[T]):
    """`put` then `pop` once; the oldest entries go first past `capacity`, stale ones read as None.
    `on_drop` is called with every value that leaves without being popped (evicted, expired,
    drained), for holders that must release what they hold."""

    def __init__(self, capacity: int, ttl_s: float, on_drop: Callable[[T], None] | None = None):
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.on_drop = on_drop
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()  # key -> (expires at, value)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, value: T) -> None:
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        while len(self._items) > self.capacity:
            self._drop(self._items.popitem(last=False)[1][1])

    def pop(self, key: str) -> T | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        if time.monotonic() > item[0]:
            self._drop(item[1])
            return None
        return item[1]

    def sweep(self) -> None:
        """Drop the expired entries now (they are in insertion order: the oldest first)."""
        now = time.monotonic()
        while self._items:
            key, (expires, value) = next(iter(self._items.items()))
            if expires >= now:
                return
            del self._items[key]
            self._drop(value)

    def drain(self) -> None:
        """Drop every entry (shutting down)."""
        while self._items:
            self._drop(self._items.popitem(last=False)[1][1])

    def _drop(self, value: T) -> None:
        if self.on_drop is not None:
            self.on_drop(value)

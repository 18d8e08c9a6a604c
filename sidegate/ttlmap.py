"""A small bounded map whose entries expire: things held for a moment between two calls in the
same process (cache-fill requests for their response, replies for their replay)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlMap(Generic[T]):
    """`put` then `pop` once; the oldest entries go first past `capacity`, stale ones read as None."""

    def __init__(self, capacity: int, ttl_s: float):
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def put(self, key: str, value: T) -> None:
        self._items[key] = (time.monotonic(), value)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def pop(self, key: str) -> T | None:
        item = self._items.pop(key, None)
        if item is None or time.monotonic() - item[0] > self.ttl_s:
            return None
        return item[1]

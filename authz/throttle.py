"""Slow down key guessing: too many failed authentications from one source address -> 429.

Per process (each authz replica counts its own traffic); a fixed window per source with a
cooldown. Successful requests are never throttled.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class FailureThrottle:
    def __init__(self, max_failures: int = 20, window_s: float = 60.0, block_s: float = 60.0,
                 max_sources: int = 100_000, clock=time.monotonic):  # type: ignore[no-untyped-def]  # fmt: skip
        self.max_failures = max_failures
        self.window_s = window_s
        self.block_s = block_s
        self.max_sources = max_sources
        self.clock = clock
        self._state: OrderedDict[str, list[float]] = OrderedDict()  # source -> [window start, count, blocked until]

    def blocked(self, source: str) -> float:
        """Seconds this source must wait (0 = not blocked)."""
        st = self._state.get(source)
        if st is None:
            return 0.0
        left = st[2] - self.clock()
        return left if left > 0 else 0.0

    def failure(self, source: str) -> None:
        now = self.clock()
        st = self._state.get(source)
        if st is None or now - st[0] > self.window_s:
            st = [now, 0.0, 0.0]
            self._state[source] = st
        self._state.move_to_end(source)
        st[1] += 1
        if st[1] >= self.max_failures:
            st[2] = now + self.block_s
        while len(self._state) > self.max_sources:
            self._state.popitem(last=False)

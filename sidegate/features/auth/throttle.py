"""Slow down key guessing without letting one client lock out another.

Two bounded tables of failed authentications, per process (each authz/extproc replica counts its
own traffic), each a fixed window with a cooldown:

* per (source address, presented key id) -- ``max_failures`` (20 a minute by default). This is
  the guessing bound: checked right after the cheap parse of the key (``sgk_<id>_<secret>``) and
  *before* the secret is hashed, so an attacker guessing the secret of ONE id gets
  ``max_failures`` verifications a window and then 429s, even for the right secret (answering a
  correct guess while blocked would make the block useless). Only that id from that address is
  blocked: every other key, and the same key from other addresses, is untouched.
* per source address -- ``max_source_failures`` (10x higher by default). This bounds a spray of
  random ids (or malformed/missing keys) from one address: once reached, that address's *failed*
  attempts are answered 429 instead of 401. It is consulted only after a key failed, so a valid
  key presented from the same address (a sidecar, a NAT, an ingress) is still served: a valid
  key's answer depends only on the failures of its own id from its own address.

Every failure with a parsable id is counted on its (address, id) entry, also while the address
is blocked; otherwise blocking the address first (a spray) and then guessing one id would give
the guesses a full verification each, unbounded. Unknown and known ids are counted alike (the
answers must not tell which ids exist). Both tables are LRU-bounded: their keys are chosen by
the attacker.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidegate.config import ServicesConfig


class _Windows:
    """Failure counts in fixed windows with a block once a bound is reached; LRU-bounded."""

    __slots__ = ("block_s", "clock", "limit", "max_entries", "state", "window_s")

    def __init__(self, limit: int, window_s: float, block_s: float, max_entries: int, clock: Callable[[], float]):
        self.limit = limit
        self.window_s = window_s
        self.block_s = block_s
        self.max_entries = max_entries
        self.clock = clock
        self.state: OrderedDict[object, list[float]] = OrderedDict()  # key -> [window start, count, blocked until]

    def blocked(self, key: object) -> float:
        st = self.state.get(key)
        if st is None:
            return 0.0
        left = st[2] - self.clock()
        return left if left > 0 else 0.0

    def failure(self, key: object) -> None:
        now = self.clock()
        st = self.state.get(key)
        if st is None or now - st[0] > self.window_s:
            st = [now, 0.0, st[2] if st else 0.0]
            self.state[key] = st
        self.state.move_to_end(key)
        st[1] += 1
        if st[1] >= self.limit:
            st[2] = now + self.block_s
        while len(self.state) > self.max_entries:
            self.state.popitem(last=False)


class FailureThrottle:
    def __init__(self, max_failures: int = 20, window_s: float = 60.0, block_s: float = 60.0,
                 max_sources: int = 100_000, clock: Callable[[], float] = time.monotonic,
                 max_source_failures: int | None = None):  # fmt: skip
        self.max_failures = max_failures
        self.max_source_failures = max_source_failures or 10 * max_failures
        self.keys = _Windows(max_failures, window_s, block_s, max_sources, clock)
        self.sources = _Windows(self.max_source_failures, window_s, block_s, max_sources, clock)

    @classmethod
    def from_config(cls, services: ServicesConfig) -> FailureThrottle:
        return cls(services.auth_max_failures, 60.0, services.auth_block_s,
                   max_source_failures=services.auth_max_source_failures or None)  # fmt: skip

    def blocked_key(self, source: str, key_id: str) -> float:
        """Seconds this key id must wait from this source before its secret is checked (0 = go on)."""
        return self.keys.blocked((source, key_id))

    def blocked(self, source: str) -> float:
        """Seconds this source's failed attempts are answered 429 instead of 401 (0 = not blocked)."""
        return self.sources.blocked(source)

    def failure(self, source: str, key_id: str | None = None) -> None:
        """Count a failed authentication: on the source and, when the key parsed, on (source, id)."""
        self.sources.failure(source)
        if key_id is not None:
            self.keys.failure((source, key_id))

"""Counters of the response cache (the lead exports them as metrics)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, fields


@dataclass
class CacheStats:
    lookups: int = 0
    hits_exact: int = 0
    hits_semantic: int = 0
    misses: int = 0
    bypassed: int = 0
    store_errors: int = 0
    """Store unreachable, slow past the bound, or a value this version cannot read."""
    semantic_errors: int = 0
    semantic_timeouts: int = 0
    semantic_shed: int = 0
    """Lookups that skipped the semantic cache because too many jobs were queued."""
    semantic_not_ready: int = 0
    """Lookups before the model finished loading."""
    semantic_too_long: int = 0
    semantic_dangling: int = 0
    """Vector hits whose stored response had already expired or been evicted."""
    semantic_recent: int = 0
    """Lookups or fills whose embedding came from the recent-embeddings LRU (no model run)."""
    fills: int = 0
    fill_errors: int = 0
    fills_skipped: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def skip(self, reason: str) -> None:
        with self._lock:
            self.fills_skipped[reason] += 1

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        out: dict[str, int | dict[str, int]] = {}
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            v = getattr(self, f.name)
            out[f.name] = dict(v) if isinstance(v, Counter) else v
        return out

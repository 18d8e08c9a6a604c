"""Several keys for one provider, taken in turn by weight."""

from __future__ import annotations


class KeyPool:
    """Smooth weighted round-robin over one provider's keys (a single key is returned as is)."""

    def __init__(self, keys: list[tuple[str, int]]):
        self.keys = [k for k, _ in keys]
        self.weights = [w for _, w in keys]
        self.current = [0] * len(keys)
        self.total = sum(self.weights)

    def next(self) -> str:
        if len(self.keys) == 1:
            return self.keys[0]
        best = 0
        for i, w in enumerate(self.weights):
            self.current[i] += w
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return self.keys[best]

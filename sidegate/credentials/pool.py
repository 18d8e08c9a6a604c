"""Several keys for one provider, taken in turn by weight (spreads per-key rate limits), sent in
either style (bearer or a named header)."""

from __future__ import annotations

from sidegate.credentials.base import scrubbable


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


class PooledKey:
    """Each try takes the pool's next key: ``<header>: <prefix><key>``."""

    __slots__ = ("_header", "_pool", "_prefix", "secrets")

    def __init__(self, header: str, prefix: str, keys: list[tuple[str, int]]) -> None:
        self._header = header
        self._prefix = prefix
        self._pool = KeyPool(keys)
        self.secrets = scrubbable(self._pool.keys)

    def apply(self, headers: dict[str, str]) -> None:
        headers[self._header] = self._prefix + self._pool.next()

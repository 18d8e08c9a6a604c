"""Process-unique ids without a system call per id: a random prefix per generator, then a counter.

For what the gateway makes up and later looks up (quota reservations, held replies, pending tries,
pending cache fills): unique across processes and restarts, never taken from anything a client
sends.
"""

from __future__ import annotations

import itertools
import secrets


class UniqueIds:
    """`ids()` -> `<prefix><random 8 hex><counter hex>`."""

    def __init__(self, prefix: str = ""):
        self._prefix = prefix + secrets.token_hex(4)
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

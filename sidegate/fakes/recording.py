"""The fakes' request log: every request received, bounded, readable in-process and as JSON."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["RecordedRequest", "RequestLog"]


@dataclass
class RecordedRequest:
    """One received request. `headers` keys are lower-cased (repeated headers joined with ', ')."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any  # the parsed body, None when absent or not JSON
    time: float
    route: str | None = None  # the endpoint's name (`chat`, `responses`, `messages`...; None: unserved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body.decode("utf-8", "replace"),
            "json": self.json,
            "time": self.time,
            "route": self.route,
        }


class RequestLog:
    """Thread-safe, capped (oldest dropped first)."""

    def __init__(self, cap: int = 10_000) -> None:
        self._items: deque[RecordedRequest] = deque(maxlen=cap)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)
            self.total += 1

    def items(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

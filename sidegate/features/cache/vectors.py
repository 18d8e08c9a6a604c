"""Vector stores behind the semantic index: Qdrant (server or embedded), or a fast in-process one.

Qdrant's embedded local mode evaluates payload filters point by point in Python (measured here:
~15 ms per query at 1,000 points, ~60-90 ms at 5,000), which does not fit a 50 ms lookup budget,
so the default embedded store is :class:`NumpyStore`: one matrix per scope, one matrix product per
query. A Qdrant server (payload-indexed filters) is the production choice for several processes.
All methods are blocking and called from the index's worker thread.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .embedder import DIM

__all__ = ["NumpyStore", "QdrantStore", "VectorStore", "point_id"]


def point_id(key: str) -> str:
    """A stable point id per exact key: refilling the same request overwrites its point."""
    return str(uuid.UUID(hex=key[:32]))


Accept = Callable[[str], bool]
"""Veto on a candidate by its tag (the index passes the contrast check: see contrast.py)."""
CANDIDATES = 4
"""Candidates above the threshold a query weighs, best first, before it gives up on vetoes."""


class VectorStore(Protocol):
    def query(
        self, scope: str, vector: list[float], threshold: float, now: float, accept: Accept | None = None
    ) -> tuple[str, float] | None: ...
    def upsert(self, scope: str, key: str, vector: list[float], expires_at: float, tag: str = "") -> bool: ...
    def cleanup(self, now: float) -> int: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


@dataclass
class _Scope:
    """One scope's rows: vectors and expiry times in arrays (a query compares them all at once, with
    no per-query conversion of a Python list: 0.5 ms at 5,000 rows), keys and tags in lists."""

    vecs: np.ndarray = field(default_factory=lambda: np.empty((4, DIM), dtype=np.float32))
    expires: np.ndarray = field(default_factory=lambda: np.empty(4, dtype=np.float64))
    keys: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def put(self, key: str, vec: np.ndarray, expires_at: float, tag: str = "") -> None:
        row = self.rows.get(key)
        if row is None:
            row = len(self.keys)
            if row == len(self.vecs):
                grown = np.empty((len(self.vecs) * 2, DIM), dtype=np.float32)
                grown[:row] = self.vecs[:row]
                self.vecs = grown
                self.expires = np.concatenate([self.expires, np.empty(len(self.expires), dtype=np.float64)])
            self.keys.append(key)
            self.tags.append(tag)
            self.rows[key] = row
        self.vecs[row] = vec
        self.expires[row] = expires_at
        self.tags[row] = tag

    def remove_expired(self, now: float) -> int:
        n = len(self.keys)
        keep = np.flatnonzero(self.expires[:n] > now)
        removed = n - len(keep)
        if removed:
            self.vecs[: len(keep)] = self.vecs[keep]
            self.expires[: len(keep)] = self.expires[keep]
            self.keys = [self.keys[i] for i in keep]
            self.tags = [self.tags[i] for i in keep]
            self.rows = {k: i for i, k in enumerate(self.keys)}
        return removed


_blas_single_threaded = False


def _single_threaded_blas() -> None:
    """numpy's OpenBLAS splits a matrix-vector product past ~4,000 rows over every core, and its
    threads spin: on a 2-core box shared with Envoy and the event loop that made the search of 5,000
    rows 1.5-6 ms instead of 0.13-0.3 (bench: docs/cache.md). One thread for the whole process (the
    gateway does no other linear algebra). Without threadpoolctl, numpy's default stays."""
    global _blas_single_threaded
    if _blas_single_threaded:
        return
    _blas_single_threaded = True
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


class NumpyStore:
    """In-process store: exact cosine search within one scope. Not shared across processes, not persisted."""

    def __init__(self, max_points: int = 50_000) -> None:
        _single_threaded_blas()
        self.max_points = max_points
        self._scopes: dict[str, _Scope] = {}
        self._n = 0
        self._lock = threading.Lock()

    def query(
        self, scope: str, vector: list[float], threshold: float, now: float, accept: Accept | None = None
    ) -> tuple[str, float] | None:
        with self._lock:
            s = self._scopes.get(scope)
            if s is None or not s.keys:
                return None
            n = len(s.keys)
            scores = s.vecs[:n] @ np.asarray(vector, dtype=np.float32)
            # Only rows at or above the threshold and unexpired are candidates: usually none or a few,
            # so no sort or partition over all the rows.
            above = np.flatnonzero((scores >= threshold) & (s.expires[:n] > now))
            if not len(above):
                return None
            rows = above[np.argsort(-scores[above], kind="stable")]
            for row in rows[: 1 if accept is None else CANDIDATES]:
                if accept is None or accept(s.tags[row]):
                    return s.keys[row], float(scores[row])
            return None

    def upsert(self, scope: str, key: str, vector: list[float], expires_at: float, tag: str = "") -> bool:
        with self._lock:
            s = self._scopes.get(scope)
            if self._n >= self.max_points and (s is None or key not in s.rows):
                return False  # full until the periodic cleanup frees expired points
            if s is None:
                s = self._scopes[scope] = _Scope()
            before = len(s.keys)
            s.put(key, np.asarray(vector, dtype=np.float32), expires_at, tag)
            self._n += len(s.keys) - before
            return True

    def cleanup(self, now: float) -> int:
        with self._lock:
            removed = 0
            for name in list(self._scopes):
                s = self._scopes[name]
                removed += s.remove_expired(now)
                if not s.keys:
                    del self._scopes[name]
            self._n -= removed
            return removed

    def count(self) -> int:
        return self._n

    def close(self) -> None:
        with self._lock:
            self._scopes.clear()
            self._n = 0


class QdrantStore:
    """One Qdrant collection; `scope` and `expires_at` payload filters (indexed on a server)."""

    def __init__(self, client: Any, collection: str, *, local: bool) -> None:
        self.client = client
        self.collection = collection
        self.local = local
        self._lock = threading.Lock()  # embedded local mode is not thread-safe

    def ensure_collection(self) -> None:
        from qdrant_client import models

        c, name = self.client, self.collection
        with self._lock:
            if c.collection_exists(name):
                return
            c.create_collection(
                name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
            )
            if not self.local:
                c.create_payload_index(name, "scope", models.PayloadSchemaType.KEYWORD)
                c.create_payload_index(name, "expires_at", models.PayloadSchemaType.FLOAT)

    def query(
        self, scope: str, vector: list[float], threshold: float, now: float, accept: Accept | None = None
    ) -> tuple[str, float] | None:
        from qdrant_client import models

        flt = models.Filter(
            must=[
                models.FieldCondition(key="scope", match=models.MatchValue(value=scope)),
                models.FieldCondition(key="expires_at", range=models.Range(gt=now)),
            ]
        )
        with self._lock:
            res = self.client.query_points(
                self.collection, query=vector, query_filter=flt, limit=1 if accept is None else CANDIDATES,
                score_threshold=threshold, with_payload=["key", "sig"],
            )  # fmt: skip
        for p in res.points:
            if p.payload and p.score >= threshold and (accept is None or accept(str(p.payload.get("sig") or ""))):
                return str(p.payload["key"]), float(p.score)
        return None

    def upsert(self, scope: str, key: str, vector: list[float], expires_at: float, tag: str = "") -> bool:
        from qdrant_client import models

        payload = {"scope": scope, "key": key, "expires_at": expires_at, "sig": tag}
        point = models.PointStruct(id=point_id(key), vector=vector, payload=payload)
        with self._lock:
            self.client.upsert(self.collection, points=[point], wait=True)
        return True

    def cleanup(self, now: float) -> int:
        from qdrant_client import models

        flt = models.Filter(must=[models.FieldCondition(key="expires_at", range=models.Range(lte=now))])
        with self._lock:
            n = self.client.count(self.collection, count_filter=flt, exact=True).count
            if n:
                self.client.delete(self.collection, points_selector=models.FilterSelector(filter=flt))
        return int(n)

    def count(self) -> int:
        with self._lock:
            return int(self.client.count(self.collection, exact=True).count)

    def close(self) -> None:
        with self._lock:
            self.client.close()

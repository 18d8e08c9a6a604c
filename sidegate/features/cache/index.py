"""Semantic index: embeddings of last user messages in Qdrant, filtered by scope and expiry.

All blocking work (ONNX inference, Qdrant calls) runs in a small thread pool; callers bound their
wait and proceed uncached past it. A queue longer than `max_pending` sheds lookups instead of
piling up. Vectors live in a :mod:`~sidegate.features.cache.vectors` store (in-process numpy by default, Qdrant server or
embedded Qdrant when configured). Each entry carries `scope`, `key` (the exact key whose stored
response it points to) and `expires_at`; searches only match the same scope and unexpired entries,
and :meth:`cleanup` deletes expired ones.
A match must also pass the contrast check (contrast.py: numbers, negations, opposites, swapped
relations), carried as each entry's `sig`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sidegate.config.cache import SemanticSettings

from .contrast import compatible, signature
from .embedder import MODELS, Embedder
from .stats import CacheStats

if TYPE_CHECKING:
    from .vectors import VectorStore

__all__ = ["SemanticIndex", "SemanticMatch"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Shed(Exception):
    pass


class SemanticMatch:
    __slots__ = ("key", "score")

    def __init__(self, key: str, score: float) -> None:
        self.key = key
        self.score = score

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"SemanticMatch({self.key[:12]}..., {self.score:.4f})"


class SemanticIndex:
    """Embedder + vector store. Create, ``await start()`` at startup, ``close()`` at shutdown."""

    def __init__(
        self,
        settings: SemanticSettings | None = None,
        *,
        embedder: Embedder | None = None,
        store: VectorStore | None = None,
        stats: CacheStats | None = None,
    ) -> None:
        self.settings = settings or SemanticSettings()
        s = self.settings
        self.embedder = embedder or Embedder(
            s.model_dir, cache_dir=s.cache_dir, threads=s.threads, int8_compute=s.int8_compute, model=s.model
        )
        self.stats = stats or CacheStats()
        self.store = store
        self._space = MODELS[s.model].space  # each model's vectors in their own scopes
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=s.workers, thread_name_prefix="sidegate-semantic"
        )
        self._pending = 0
        self._pending_lock = threading.Lock()
        # text -> (token count, vector): the same last user message embeds once per process while
        # it stays among the `recent_embeddings` most recent (repeated prompts are common traffic).
        # Kept as float32 arrays (1.5 KiB each; a list of Python floats would take ~12 KiB).
        self._recent: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._ready = False
        self._start_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def threshold(self) -> float:
        """The model's threshold, for routes that set none."""
        return MODELS[self.settings.model].threshold

    def _make_store(self) -> VectorStore:
        from .vectors import NumpyStore, QdrantStore  # numpy/qdrant: only with the `semantic` extra

        s = self.settings
        kind = s.vector_store
        if kind == "auto":
            kind = "qdrant" if (s.qdrant_url or s.qdrant_path) else "memory"
        if kind == "memory":
            return NumpyStore(s.max_points)
        from qdrant_client import QdrantClient

        if s.qdrant_url:
            client = QdrantClient(url=s.qdrant_url, timeout=max(1, int(s.fill_timeout_s)))
        elif s.qdrant_path is not None:
            s.qdrant_path.mkdir(parents=True, exist_ok=True)
            client = QdrantClient(path=str(s.qdrant_path))
        else:
            client = QdrantClient(location=":memory:")
        store = QdrantStore(client, s.collection, local=not s.qdrant_url)
        store.ensure_collection()
        return store

    def _start_sync(self) -> None:
        self.embedder.load()
        self.embedder.embed(["warm up"])
        if self.store is None:
            self.store = self._make_store()
        self._ready = True

    async def start(self) -> None:
        """Load the model and open the collection (about a second; raises EmbedderUnavailable)."""
        if not self._ready:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._start_sync)

    def start_background(self) -> asyncio.Task[None]:
        """Start without waiting; lookups before it finishes skip the semantic cache (counted)."""
        if self._start_task is None:
            self._start_task = asyncio.get_running_loop().create_task(self._start_logged())
        return self._start_task

    async def _start_logged(self) -> None:
        try:
            await self.start()
        except Exception:
            log.exception("semantic cache disabled: start failed")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()

    # -- bounded execution ---------------------------------------------------------------------

    def _done(self, _: concurrent.futures.Future[Any]) -> None:
        with self._pending_lock:
            self._pending -= 1

    def _submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Queue `fn` in the pool now; _Shed when the queue is full."""
        with self._pending_lock:
            if self._pending >= self.settings.max_pending:
                raise _Shed
            self._pending += 1
        cf = self._pool.submit(fn)
        cf.add_done_callback(self._done)
        return cf

    async def _run(self, fn: Callable[[], T], timeout_s: float) -> T:
        """Run `fn` in the pool and wait at most `timeout_s` (TimeoutError); _Shed when the queue is full."""
        return await asyncio.wait_for(asyncio.wrap_future(self._submit(fn)), timeout_s)

    # -- blocking jobs (pool thread) -----------------------------------------------------------

    def _vector(self, text: str, max_tokens: int) -> list[float] | None:
        import numpy as np  # with the `semantic` extra only
        max_tokens = min(max_tokens, MODELS[self.settings.model].window)
        size = self.settings.recent_embeddings
        with self._recent_lock:
            known = self._recent.get(text)
            if known is not None:
                self._recent.move_to_end(text)
        if known is not None:
            self.stats.incr("semantic_recent")
            return known[1].tolist() if known[0] <= max_tokens else None
        tokens = self.embedder.token_count(text)
        if tokens > max_tokens:
            return None
        vector = self.embedder.embed([text])[0]
        if size:
            with self._recent_lock:
                self._recent[text] = (tokens, np.asarray(vector, dtype=np.float32))
                if len(self._recent) > size:
                    self._recent.popitem(last=False)
        return vector

    def _search_job(
        self, scope: str, text: str, vector: list[float] | None, threshold: float, max_tokens: int
    ) -> tuple[list[float] | None, SemanticMatch | None]:
        if vector is None:
            vector = self._vector(text, max_tokens)
            if vector is None:
                return None, None
        assert self.store is not None
        sig = signature(text)
        found = self.store.query(self._space + scope, vector, threshold, time.time(), lambda tag: compatible(tag, sig))
        return vector, (SemanticMatch(*found) if found else None)

    def _add_job(
        self, scope: str, key: str, text: str, vector: list[float] | None, expires_at: float, max_tokens: int
    ) -> bool:
        if vector is None:
            vector = self._vector(text, max_tokens)
            if vector is None:
                return False
        assert self.store is not None
        return self.store.upsert(self._space + scope, key, vector, expires_at, signature(text))

    # -- async API -----------------------------------------------------------------------------

    def begin_search(
        self, scope: str, text: str, *, threshold: float, max_tokens: int = 256
    ) -> concurrent.futures.Future[tuple[list[float] | None, SemanticMatch | None]] | None:
        """Start a search now (the model runs while the request's other stages do), for
        :meth:`search` to await later with `started=`; None when it cannot start (not ready, queue
        full): then :meth:`search` runs it as usual, and counts why."""
        if not self._ready:
            return None
        try:
            return self._submit(lambda: self._search_job(scope, text, None, threshold, max_tokens))
        except _Shed:
            return None

    async def search(
        self,
        scope: str,
        text: str,
        *,
        threshold: float,
        timeout_s: float,
        max_tokens: int = 256,
        vector: list[float] | None = None,
        started: concurrent.futures.Future[tuple[list[float] | None, SemanticMatch | None]] | None = None,
    ) -> tuple[list[float] | None, SemanticMatch | None]:
        """(vector, best match at or above threshold). Never raises: failures count and return no match.

        The vector is None when the text is too long for the model (or on failure). `started`: the
        same search from :meth:`begin_search` (same scope, text, threshold and max_tokens).
        """
        if not self._ready:
            self.stats.incr("semantic_not_ready")
            return vector, None
        try:
            if started is not None:
                vec, match = await asyncio.wait_for(asyncio.wrap_future(started), timeout_s)
            else:
                vec, match = await self._run(
                    lambda: self._search_job(scope, text, vector, threshold, max_tokens), timeout_s
                )
        except _Shed:
            self.stats.incr("semantic_shed")
            return vector, None
        except TimeoutError:
            self.stats.incr("semantic_timeouts")
            return vector, None
        except Exception as exc:
            self.stats.incr("semantic_errors")
            log.warning("semantic lookup failed: %s", type(exc).__name__)
            return vector, None
        if vec is None:
            self.stats.incr("semantic_too_long")
        return vec, match

    async def add(
        self,
        scope: str,
        key: str,
        text: str,
        *,
        expires_at: float,
        vector: list[float] | None = None,
        max_tokens: int = 256,
        timeout_s: float | None = None,
    ) -> bool:
        """Index one stored response. Never raises; False when skipped or failed."""
        if not self._ready:
            return False
        try:
            added = await self._run(
                lambda: self._add_job(scope, key, text, vector, expires_at, max_tokens),
                timeout_s or self.settings.fill_timeout_s,
            )
            if not added:
                self.stats.skip("not_indexed")
            return added
        except _Shed:
            self.stats.skip("semantic_shed")
        except TimeoutError:
            self.stats.skip("semantic_timeout")
        except Exception as exc:
            self.stats.incr("fill_errors")
            log.warning("semantic fill failed: %s", type(exc).__name__)
        return False

    async def cleanup(self) -> int:
        """Delete expired points; returns how many."""
        if not self._ready:
            return 0
        store = self.store
        assert store is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: store.cleanup(time.time())
        )

    async def run_cleanup(self, max_runs: int | None = None) -> None:
        """Periodic cleanup loop (run as a task; cancel it at shutdown)."""
        runs = 0
        while max_runs is None or runs < max_runs:
            await asyncio.sleep(self.settings.cleanup_interval_s)
            try:
                n = await self.cleanup()
                if n:
                    log.info("semantic cache: removed %d expired entries", n)
            except Exception as exc:
                log.warning("semantic cache cleanup failed: %s", type(exc).__name__)
            runs += 1

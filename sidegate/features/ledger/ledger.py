"""The usage ledger: one record per completed request, appended to the Redis Stream ``sg:ledger``.

The response path only does ``Ledger.submit`` (a non-blocking put on a bounded in-memory queue; when
the queue is full the record is dropped and counted). A background task drains the queue in batches
with pipelined ``XADD ... MAXLEN ~ N``. Stream entries are flat string maps, so any consumer group
(``XREADGROUP``) can ship them on; :mod:`sidegate.features.ledger.reading` reads them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from sidegate import metrics as m
from sidegate.core.completion import CostFn, safe_cost, ttft_seconds
from sidegate.store import Store

if TYPE_CHECKING:
    from sidegate.core.completion import Completion, CompletionHook

log = logging.getLogger("sidegate.ledger")

STREAM = "sg:ledger"
DEFAULT_MAXLEN = 1_000_000
DEFAULT_QUEUE = 10_000


@dataclass(slots=True)
class LedgerRecord:
    """One completed request. ``latency_ms`` covers the whole request when the gateway put its wall
    clock start in ``meta["received_at"]``, else the final provider try; ``ttft_ms`` is None unless
    streamed. ``cache`` is the response-cache result (``none`` when no cache ran)."""

    ts: float
    request_id: str = ""
    tenant: str = ""
    key_id: str = ""
    api: str = ""
    endpoint: str = "completions"
    """What was asked: `completions` or `embeddings` (records written before it existed: completions)."""
    model: str = ""
    provider: str = ""
    upstream_model: str = ""
    status: int = 0
    attempts: int = 0
    stream: bool = False
    aborted: bool = False
    cache: str = "none"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None

    def to_fields(self) -> dict[str, str]:
        """Flat string map for XADD (None -> empty string)."""
        out: dict[str, str] = {}
        for k in _FIELD_NAMES:  # not dataclasses.asdict: it deep-copies (~0.1 ms per record)
            v = getattr(self, k)
            if v is None:
                out[k] = ""
            elif isinstance(v, bool):
                out[k] = "1" if v else "0"
            elif isinstance(v, float):
                out[k] = repr(round(v, 6))
            else:
                out[k] = str(v)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELD_NAMES}

    @classmethod
    def from_fields(cls, data: dict[Any, Any]) -> LedgerRecord:
        """Inverse of :meth:`to_fields`; tolerates missing and unknown fields (schema evolution)."""
        raw = {as_text(k): as_text(v) for k, v in data.items()}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            v = raw[f.name]
            kind = str(f.type)
            if kind == "bool":
                kwargs[f.name] = v == "1"
            elif kind == "int":
                kwargs[f.name] = int(v or 0)
            elif kind == "float":
                kwargs[f.name] = float(v or 0)
            elif kind == "float | None":
                kwargs[f.name] = float(v) if v else None
            else:
                kwargs[f.name] = v
        kwargs.setdefault("ts", 0.0)
        return cls(**kwargs)


_FIELD_NAMES = tuple(f.name for f in fields(LedgerRecord))


def as_text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def record_from_completion(c: Completion, cost_usd: float = 0.0, now: float | None = None) -> LedgerRecord:
    meta = c.meta
    wall = time.time() if now is None else now
    received = meta.get("received_at")
    if isinstance(received, (int, float)) and 0 < received <= wall:
        latency = (wall - float(received)) * 1000
    else:
        latency = max(c.ended_at - c.started_at, 0.0) * 1000
    ttft = ttft_seconds(c)
    usage = c.usage
    return LedgerRecord(
        ts=wall, request_id=str(meta.get("request_id", "")), tenant=str(meta.get("tenant", "")),
        key_id=str(meta.get("key_id", "")), api=str(meta.get("api", "")),
        endpoint=str(meta.get("endpoint") or "completions"), model=str(meta.get("model", "")),
        provider=c.provider, upstream_model=c.upstream_model, status=c.status, attempts=c.attempt,
        stream=bool(meta.get("stream", c.streamed)), aborted=c.aborted, cache=str(meta.get("cache") or "none"),
        input_tokens=usage.input_tokens if usage else 0, output_tokens=usage.output_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        cache_creation_tokens=usage.cache_creation_tokens if usage else 0,
        cost_usd=cost_usd, latency_ms=round(latency, 3), ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
    )  # fmt: skip


class Ledger:
    """Bounded queue + one background writer task. ``submit`` never blocks and never raises."""

    def __init__(
        self,
        store: Store,
        *,
        stream: str = STREAM,
        maxlen: int = DEFAULT_MAXLEN,
        queue_size: int = DEFAULT_QUEUE,
        batch_size: int = 256,
        retry_delay_s: float = 0.2,
    ):
        self.store = store
        self.stream = stream
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.retry_delay_s = retry_delay_s
        self.queue: asyncio.Queue[LedgerRecord] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0
        self.written = 0
        self._task: asyncio.Task[None] | None = None

    # -- response path -----------------------------------------------------------------------
    def submit(self, rec: LedgerRecord) -> bool:
        try:
            self.queue.put_nowait(rec)
        except asyncio.QueueFull:
            self.dropped += 1
            m.child(m.LEDGER_RECORDS, "dropped_full").inc()
            return False
        m.LEDGER_QUEUE.inc()
        return True

    def completion_hook(self, cost: CostFn | None = None) -> CompletionHook:
        """A completion hook: one record per final try (the try that answered the client)."""

        def observe(c: Completion) -> None:
            if not c.final:
                return
            try:
                self.submit(record_from_completion(c, safe_cost(cost, c)))
            except Exception:
                log.exception("ledger completion hook failed")

        return observe

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sidegate-ledger")

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything submitted so far was written or dropped; False on timeout."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Drain what is queued (bounded by ``timeout_s``), then stop the writer."""
        if self._task is None:
            return
        await self.flush(timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    # -- writer ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._write(batch)
            finally:
                m.LEDGER_QUEUE.dec(len(batch))
                for _ in batch:
                    self.queue.task_done()

    async def _write(self, batch: list[LedgerRecord]) -> None:
        for attempt in range(2):
            try:
                head = ("XADD", self.stream, "MAXLEN", "~", self.maxlen, "*")
                await self.store.commands([(*head, *_flat(rec.to_fields())) for rec in batch], lazy=True)
            except (RedisError, OSError) as exc:
                m.store_error("ledger", "xadd")
                if attempt == 0:
                    await asyncio.sleep(self.retry_delay_s)
                    continue
                self.dropped += len(batch)
                m.child(m.LEDGER_RECORDS, "dropped_error").inc(len(batch))
                log.warning(
                    "usage ledger: dropped %d records, store error: %s", len(batch), type(exc).__name__
                )
                return
            self.written += len(batch)
            m.child(m.LEDGER_RECORDS, "written").inc(len(batch))
            return


def _flat(fields: dict[str, Any]) -> list[Any]:
    return [x for kv in fields.items() for x in kv]

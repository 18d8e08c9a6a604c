"""The shipper: the store's ledger stream (`sg:ledger`) into ClickHouse, each record once.

It reads the stream as a member of a consumer group (one group per destination), so the store
remembers what was shipped. Each pass:

1. its own pending entries first (delivered to it before, never acknowledged: it died between
   the read, the insert and the XACK), re-sent as ONE batch, whatever ``batch_size`` says now;
2. the pending entries of consumers idle longer than ``claim_idle_s`` (a replaced host), each
   consumer's whole batch claimed and re-sent as one;
3. new entries, up to ``batch_size`` or until the first one waited ``flush_interval_s``.

A batch is acknowledged (XACK) only after ClickHouse accepted the insert; a failed insert is
retried with back-off (bounded, forever: the records wait in the store, the lag metric shows them).
The insert carries ``insert_deduplication_token`` = a digest of the batch's stream ids, and the
tables keep a deduplication window, so a batch re-sent after a crash between insert and XACK is
dropped by ClickHouse: neither lost nor doubled. That is why a consumer's pending entries are
always re-sent exactly as the batch they were (its pending list only ever holds one batch).

Tests only: ``SIDEGATE_TEST_LEDGER_SHIP_CRASH=after_insert:K`` makes the process SIGKILL itself
right after its K-th successful insert, before the XACK (the worst moment for exactly-once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from sidegate import metrics as m
from sidegate.config.ledger_ship import LedgerShipConfig
from sidegate.features.ledger.clickhouse import Sink, dedup_token, rows_jsonl
from sidegate.features.ledger.lease import ConsumerLease
from sidegate.features.ledger.ledger import STREAM, LedgerRecord, as_text
from sidegate.features.ledger.reading import since_to_id

log = logging.getLogger("sidegate.ledger.ship")

CRASH_ENV = "SIDEGATE_TEST_LEDGER_SHIP_CRASH"
"""Tests only: `after_insert:K` -> SIGKILL this process after its K-th insert, before the XACK."""
_PAGE = 1000
_LAG_SCAN = 1000
"""When the store cannot tell a group's lag, count up to this many entries (past it: the stream's length)."""
_LEASE_POLL_S = 1.0
"""How often a shipper waiting for its consumer name's lease tries again."""
_MAX_BLOCK_S = 5.0
"""Longest single XREADGROUP BLOCK (below the client's socket timeout; a stop is seen within it)."""

Batch = list[tuple[str, LedgerRecord]]


def _crash_after() -> int | None:
    spec = os.environ.get(CRASH_ENV, "")
    if spec.startswith("after_insert:") and spec.split(":", 1)[1].isdigit():
        return int(spec.split(":", 1)[1])
    return None


class Shipper:
    def __init__(self, redis: Redis, sink: Sink, cfg: LedgerShipConfig, *, stream: str = STREAM) -> None:
        self.redis, self.sink, self.cfg, self.stream = redis, sink, cfg, stream
        self.group = cfg.group
        self.consumer = cfg.consumer_name()
        self.lease = ConsumerLease(redis, stream, self.group, self.consumer)
        """Held while shipping: one shipper per consumer name (:mod:`.lease` says why)."""
        self.shipped = 0
        self.batches = 0
        self.trimmed = 0
        self.failures = 0
        self.last_insert_at = time.time()
        """Wall time of the last successful insert (the start, until there is one)."""
        self._crash_after = _crash_after()
        m.ledger_ship_started(lambda: time.time() - self.last_insert_at)

    # -- set-up --------------------------------------------------------------------------------
    async def ensure_group(self) -> None:
        """Create the group on first use, at ``cfg.since`` (default: the stream's beginning)."""
        try:
            await self.redis.xgroup_create(
                self.stream, self.group, id=since_to_id(self.cfg.since), mkstream=True
            )
            log.info("ledger shipper: created consumer group %r on %s", self.group, self.stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def connect(self, stop: asyncio.Event, create_tables: bool) -> bool:
        """Open the sink (and create the tables), retrying with back-off; False if stopped first."""
        return await self._retry(stop, "connect", lambda: self._connect(create_tables))

    async def _connect(self, create_tables: bool) -> None:
        await self.sink.open()
        if create_tables:
            await self.sink.create_tables()

    # -- the loop --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, follow: bool = True) -> int:
        """Ship until ``stop`` is set (``follow``) or until caught up. Returns records shipped.
        A store error ends the pass; the next one starts after a back-off (nothing is lost: what was
        not acknowledged is re-sent, deduplicated, from the pending list)."""
        delay = self.cfg.retry_initial_s
        group_ready = (
            False  # (re)checked at the start and after a store error (NOGROUP: the stream was deleted)
        )
        try:
            while not stop.is_set():
                try:
                    if not self.lease.held and not await self.lease.take():
                        if await _wait(stop, _LEASE_POLL_S):  # another shipper under this name
                            break
                        continue
                    if not group_ready:
                        await self.ensure_group()
                        group_ready = True
                    idle = await self.pass_once(stop, block=follow)
                    await self.update_lag()
                except (RedisError, OSError) as exc:
                    group_ready = False
                    m.store_error("ledger_ship", "stream")
                    log.warning("ledger shipper: store error (%s: %s); retrying in %.1fs", type(exc).__name__,
                                str(exc)[:300], delay)  # fmt: skip
                    if await _wait(stop, delay):
                        break
                    delay = min(delay * 2, self.cfg.retry_max_s)
                    continue
                delay = self.cfg.retry_initial_s
                if not follow and idle:
                    break
        finally:
            await self.lease.release()
        return self.shipped

    async def pass_once(self, stop: asyncio.Event, *, block: bool = True) -> bool:
        """One pass (own pending, claims, one batch of new entries). True when nothing was left."""
        own, own_ids = await self._own_pending()
        if own_ids and not await self.ship(own, stop, token_ids=own_ids):
            return False
        # One idle consumer at a time, shipped before the next is claimed: this consumer's pending
        # list must never hold two batches (a crash would then re-send them as one, another token).
        claimed = 0
        for name in await self._idle_consumers():
            batch, ids = await self._claim(name)
            claimed += len(batch)
            if ids and not await self.ship(batch, stop, token_ids=ids):
                return False
        fresh = await self._read_new(stop, block)
        if fresh and not await self.ship(fresh, stop):
            return False
        return not fresh and not claimed and not own

    async def _own_pending(self) -> tuple[Batch, list[str]]:
        """Everything delivered to this consumer and not acknowledged: one earlier batch, whole
        (the records still in the stream, and every id of the batch: its token)."""
        batch: Batch = []
        cursor = "0"
        while True:
            resp = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: cursor}, count=_PAGE)
            entries = resp[0][1] if resp else []
            if not entries:
                return [(eid, rec) for eid, rec in batch if rec is not _TRIMMED], [eid for eid, _ in batch]
            for eid, data in entries:
                batch.append((as_text(eid), LedgerRecord.from_fields(data) if data else _TRIMMED))
            cursor = as_text(entries[-1][0])

    async def _idle_consumers(self) -> list[str]:
        """Other consumers of the group idle for ``claim_idle_s`` (their process is gone); those
        with nothing pending are removed from the group."""
        idle_ms = int(self.cfg.claim_idle_s * 1000)
        names: list[str] = []
        for c in await self.redis.xinfo_consumers(self.stream, self.group):
            name = as_text(c["name"])
            if name == self.consumer or int(c.get("idle", 0)) < idle_ms:
                continue
            if int(c.get("pending", 0)) == 0:
                await self.redis.xgroup_delconsumer(self.stream, self.group, name)
                log.info("ledger shipper: removed idle consumer %r (nothing pending)", name)
            else:
                names.append(name)
        return names

    async def _claim(self, name: str) -> tuple[Batch, list[str]]:
        """All of an idle consumer's pending entries (its one batch, whole: same ids, same token):
        the records still in the stream, and every id of the batch."""
        pending = await self.redis.xpending_range(
            self.stream, self.group, "-", "+", 1_000_000, consumername=name
        )
        ids = [as_text(p["message_id"]) for p in pending]
        if not ids:
            return [], []
        got = await self.redis.xclaim(self.stream, self.group, self.consumer, 0, ids)
        batch: Batch = [(as_text(eid), LedgerRecord.from_fields(data)) for eid, data in got if eid and data]
        log.warning(
            "ledger shipper: took over %d unacknowledged records of idle consumer %r", len(batch), name
        )
        return batch, ids

    async def _read_new(self, stop: asyncio.Event, block: bool) -> Batch:
        """New entries: up to batch_size, or what arrived until the first waited flush_interval_s."""
        size = self.cfg.batch_size
        batch: Batch = []
        deadline: float | None = None
        while len(batch) < size and not stop.is_set():
            wait_s = self.cfg.flush_interval_s if deadline is None else deadline - time.monotonic()
            if batch and wait_s <= 0:
                break
            block_ms = int(min(max(wait_s, 0.001), _MAX_BLOCK_S) * 1000) if block else None
            resp = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=size - len(batch), block=block_ms
            )
            entries = resp[0][1] if resp else []
            if entries and deadline is None:
                deadline = time.monotonic() + self.cfg.flush_interval_s
            batch.extend((as_text(eid), LedgerRecord.from_fields(data)) for eid, data in entries)
            if not entries and (not block or not batch):
                break
        return batch

    def _count_trimmed(self, n: int) -> None:
        self.trimmed += n
        m.ledger_ship_trimmed(n)
        log.error(
            "ledger shipper: %d records were trimmed from the stream before they were acknowledged "
            "(lost to ClickHouse unless an earlier insert of their batch had gone through)",
            n,
        )

    # -- one batch -------------------------------------------------------------------------------
    async def ship(self, batch: Batch, stop: asyncio.Event, *, token_ids: list[str] | None = None) -> bool:
        """Insert (retrying with back-off) then XACK. False if stopped before the insert succeeded
        (the batch stays pending and is re-sent, under the same token, by the next run).
        ``token_ids``: a re-sent batch's ids as first sent, trimmed ones included: if the stream
        trimmed some of it since, the rest still carries the first insert's token (a new token
        would store the rest twice when that insert had landed)."""
        ids = token_ids or [eid for eid, _ in batch]
        body, token = rows_jsonl(batch), dedup_token(ids)
        # (all of a re-sent batch trimmed: nothing to insert, its ids only to acknowledge)
        if batch:
            if not await self._retry(stop, "insert", lambda: self.sink.insert(body, token)):
                return False
            self.last_insert_at = time.time()
            self.batches += 1
            if self._crash_after is not None and self.batches >= self._crash_after:
                log.warning(
                    "ledger shipper: %s: SIGKILL after insert %d, before its XACK", CRASH_ENV, self.batches
                )
                os.kill(os.getpid(), signal.SIGKILL)
        # Stopped before the XACK went through: the batch stays pending and its re-send is deduplicated.
        # The trimmed ids are acknowledged with the rest, never before: until then the pending list
        # holds the batch whole, so a crash now still re-sends it under the same token.
        if not await self._retry(stop, "store", lambda: self.redis.xack(self.stream, self.group, *ids)):
            return False
        if len(ids) > len(batch):  # entries the stream trimmed before they were acknowledged
            self._count_trimmed(len(ids) - len(batch))
        if batch:
            self.shipped += len(batch)
            m.ledger_ship_batch(len(batch))
        return True

    async def _retry(self, stop: asyncio.Event, what: str, fn: Callable[[], Awaitable[Any]]) -> bool:
        """Call ``fn`` until it succeeds (True) or ``stop`` is set (False); exponential back-off.
        ``what``: `store` retries store errors only; `insert`/`connect` any error of the sink."""
        errors: tuple[type[BaseException], ...] = (RedisError, OSError) if what == "store" else (Exception,)
        delay = self.cfg.retry_initial_s
        while True:
            try:
                await fn()
                return True
            except errors as exc:
                if what == "store":
                    m.store_error("ledger_ship", "xack")
                else:
                    self.failures += 1
                    m.ledger_ship_failure(what)
                log.warning("ledger shipper: %s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__,
                            str(exc)[:300], delay)  # fmt: skip
            if await _wait(stop, delay):
                return False
            delay = min(delay * 2, self.cfg.retry_max_s)

    async def update_lag(self) -> int | None:
        """Records the group has not acknowledged: not yet delivered (XINFO GROUPS `lag`) + pending."""
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except (RedisError, OSError):
            return None
        for g in groups:
            if as_text(g["name"]) != self.group:
                continue
            lag = g.get("lag")
            if lag is None:  # the store cannot tell (entries deleted past the group): count, bounded
                last = as_text(g["last-delivered-id"])
                tail = await self.redis.xrange(self.stream, min=f"({last}", max="+", count=_LAG_SCAN)
                lag = len(tail) if len(tail) < _LAG_SCAN else await self.redis.xlen(self.stream)
            total = int(lag) + int(g.get("pending", 0))
            m.ledger_ship_lag(total)
            return total
        return None


async def _wait(stop: asyncio.Event, delay_s: float) -> bool:
    """Sleep ``delay_s`` unless stopped first; True if stopped."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), delay_s)
    except TimeoutError:
        return False
    return True


_TRIMMED: Any = object()
"""Placeholder for a pending entry whose data the stream no longer holds."""

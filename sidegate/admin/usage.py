"""Usage views for the admin API and the console, computed from the ledger stream (``sg:ledger``).

Every view reads the stream NEWEST FIRST (XREVRANGE) and stops after :data:`MAX_RECORDS` records, so
a console asking for "the last 24 h" on a busy gateway gets the most recent part complete and is told
where completeness starts (``complete_from``), instead of the oldest hours and a silent gap at the
end. The work is bounded three ways, each reported in the answer: the number of buckets
(:data:`MAX_BUCKETS`, the range is shortened from its start), the records read, and the groups
(:data:`MAX_GROUPS`, the rest summed into ``(other)``).

Aggregation is pure (:class:`Series`, :class:`Top`) over :class:`LedgerRecord` values, filtered by
what the caller's :class:`Principal` sees; the store access is the one reader :func:`newest_first`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis

from sidegate.admin.principal import Principal
from sidegate.features.ledger.ledger import STREAM, LedgerRecord, as_text

TIME_PATTERN = r"^(\d{1,12}(\.\d{1,6})?|\d{1,6}[smhdw])$"
"""A time: Unix seconds, or a duration back from now (``90m``, ``24h``, ``7d``)."""
AFTER_PATTERN = r"^\d{1,15}-\d{1,19}$"
"""A ledger stream id (the tail's cursor)."""
DEFAULT_FROM = "24h"
TOP_MAX = 100
GroupBy = Literal["tenant", "team", "user", "model", "provider"]
GROUP_BYS: tuple[str, ...] = ("tenant", "team", "user", "model", "provider")
BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_BUCKETS = 1440
"""A day of minutes, 60 days of hours, ~4 years of days: enough for a chart, small to send."""
MAX_RECORDS = 100_000
"""Records read per answer (the newest ones of the range): a bounded scan of a few hundred ms."""
TOP_MAX_RANGE_S = 90 * 86400
"""The longest range a top list covers (its records are bounded by :data:`MAX_RECORDS` anyway)."""
MAX_GROUPS = 20
OTHER = "(other)"
NONE = "(none)"
RECENT_MAX = 500
RECENT_SCAN = 5_000
"""Records a tail request looks through to find ``limit`` the caller may see."""
METRICS = ("requests", "errors", "input_tokens", "output_tokens", "cost_usd")


def is_error(rec: LedgerRecord) -> bool:
    """As the ledger's own summaries count errors (reading.summarize)."""
    return rec.status >= 400 or rec.aborted


def group_of(rec: LedgerRecord, by: str) -> str:
    """The group a record counts in. Teams and users are named inside their tenant (``acme/ml``):
    two tenants' ``alice`` are different people."""
    if by == "team":
        return f"{rec.tenant}/{rec.team or NONE}"
    if by == "user":
        return f"{rec.tenant}/{rec.user or NONE}"
    value: str = getattr(rec, by)
    return value or NONE


def lean_record(data: dict[bytes, bytes]) -> LedgerRecord:
    """Only the fields the charts use, at a third of :meth:`LedgerRecord.from_fields`' cost (which
    decodes every field by its declared type: ~12 µs a record, most of a long scan's Python time)."""
    if data and not isinstance(next(iter(data)), bytes):  # a client decoding answers to str
        return LedgerRecord.from_fields(data)
    get = data.get
    return LedgerRecord(
        ts=float(get(b"ts") or 0),
        tenant=(get(b"tenant") or b"").decode(),
        team=(get(b"team") or b"").decode(),
        user=(get(b"user") or b"").decode(),
        model=(get(b"model") or b"").decode(),
        provider=(get(b"provider") or b"").decode(),
        status=int(get(b"status") or 0),
        aborted=get(b"aborted") == b"1",
        input_tokens=int(get(b"input_tokens") or 0),
        output_tokens=int(get(b"output_tokens") or 0),
        cost_usd=float(get(b"cost_usd") or 0),
        latency_ms=float(get(b"latency_ms") or 0),
    )


async def newest_first(
    redis: Redis, start_ms: int | str, end_ms: int | str, limit: int, *, stream: str = STREAM, page: int = 1000,
    lean: bool = False,
) -> AsyncIterator[tuple[str, LedgerRecord]]:  # fmt: skip
    """(id, record) pairs from ``end_ms`` back to ``start_ms`` (stream-id milliseconds, inclusive;
    ``"(<id>"`` makes the start exclusive), at most ``limit`` of them; ``lean``: :func:`lean_record`."""
    hi: str = str(end_ms)
    seen = 0
    decode = lean_record if lean else LedgerRecord.from_fields
    while seen < limit:
        count = min(page, limit - seen)
        entries = await redis.xrevrange(stream, max=hi, min=str(start_ms), count=count)
        for eid, data in entries:
            seen += 1
            yield as_text(eid), decode(data)
        if len(entries) < count:
            return
        hi = "(" + as_text(entries[-1][0])


@dataclass(slots=True)
class Window:
    """The range an answer covers: bucket-aligned, capped to :data:`MAX_BUCKETS` buckets."""

    start: float
    end: float
    bucket_s: int
    range_capped: bool

    @classmethod
    def of(cls, start: float, end: float, bucket_s: int, max_buckets: int = MAX_BUCKETS) -> Window:
        end = max(end, 0.0)
        first = max(math.floor(min(start, end) / bucket_s) * bucket_s, 0)
        last = math.ceil(end / bucket_s) * bucket_s if end > first else first
        capped = (last - first) / bucket_s > max_buckets
        if capped:
            first = max(last - max_buckets * bucket_s, 0)
        return cls(float(first), float(last), bucket_s, capped)

    @property
    def count(self) -> int:
        return int((self.end - self.start) // self.bucket_s)

    def index(self, ts: float) -> int | None:
        if not self.start <= ts < self.end:
            return None
        return int((ts - self.start) // self.bucket_s)


@dataclass(slots=True)
class _Line:
    requests: list[int]
    errors: list[int]
    input_tokens: list[int]
    output_tokens: list[int]
    cost_usd: list[float]

    @classmethod
    def zeros(cls, n: int) -> _Line:
        return cls([0] * n, [0] * n, [0] * n, [0] * n, [0.0] * n)

    def add(self, i: int, rec: LedgerRecord) -> None:
        self.requests[i] += 1
        self.errors[i] += is_error(rec)
        self.input_tokens[i] += rec.input_tokens
        self.output_tokens[i] += rec.output_tokens
        self.cost_usd[i] += rec.cost_usd

    def merge(self, other: _Line) -> None:
        for name in METRICS:
            mine, theirs = getattr(self, name), getattr(other, name)
            for i, v in enumerate(theirs):
                mine[i] += v

    def rank(self) -> tuple[float, int, int]:
        return (sum(self.cost_usd), sum(self.input_tokens) + sum(self.output_tokens), sum(self.requests))


@dataclass(slots=True)
class Scan:
    """How much of the range an answer read: said in every answer, so a capped view is never taken
    for the whole truth."""

    records_read: int = 0
    truncated: bool = False
    complete_from: float | None = None
    """Unix s from which the answer has every record (None: the whole range)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.records_read,
            "record_limit": MAX_RECORDS,
            "truncated": self.truncated,
            "complete_from": self.complete_from,
        }


async def scan(
    redis: Redis, who: Principal, tenant: str | None, window: Window, *, limit: int = MAX_RECORDS,
    stream: str = STREAM,
) -> tuple[list[LedgerRecord], Scan]:  # fmt: skip
    """The records of ``window`` the caller sees (and of ``tenant`` when given), newest first, bounded."""
    info = Scan()
    out: list[LedgerRecord] = []
    start_ms, end_ms = int(window.start * 1000), max(int(window.end * 1000) - 1, 0)
    if window.count == 0:
        return out, info
    last_ts: float | None = None
    read = 0
    async for _, rec in newest_first(redis, start_ms, end_ms, limit, stream=stream, lean=True):
        read += 1
        last_ts = rec.ts
        if (tenant is not None and rec.tenant != tenant) or not who.sees(rec.tenant):
            continue
        out.append(rec)
    # A caller scoped to one tenant is told how many of its records were read, never how many the
    # whole gateway holds (every tenant's traffic, counted window by window).
    info.records_read = read if who.tenant is None else len(out)
    if read >= limit and last_ts is not None:
        info.truncated = True
        info.complete_from = last_ts
    return out, info


@dataclass(slots=True)
class Series:
    """Per-bucket sums per group: the data of the console's charts."""

    window: Window
    group_by: str
    lines: dict[str, _Line] = field(default_factory=dict)

    def add_all(self, records: Iterable[LedgerRecord]) -> None:
        for rec in records:
            i = self.window.index(rec.ts)
            if i is None:  # a record replayed from a spill lands by its stream id, counts by its time
                continue
            key = group_of(rec, self.group_by)
            line = self.lines.get(key)
            if line is None:
                line = self.lines[key] = _Line.zeros(self.window.count)
            line.add(i, rec)

    def to_dict(self) -> dict[str, Any]:
        ranked = sorted(self.lines.items(), key=lambda kv: (kv[1].rank(), kv[0]), reverse=True)
        kept, rest = ranked[:MAX_GROUPS], ranked[MAX_GROUPS:]
        if rest:
            other = _Line.zeros(self.window.count)
            for _, line in rest:
                other.merge(line)
            kept.append((OTHER, other))
        w = self.window
        return {
            "from": w.start,
            "to": w.end,
            "bucket_s": w.bucket_s,
            "group_by": self.group_by,
            "range_capped": w.range_capped,
            "groups_merged": len(rest),
            "buckets": [w.start + i * w.bucket_s for i in range(w.count)],
            "series": [
                {"group": name, **{m: _rounded(getattr(line, m)) for m in METRICS}} for name, line in kept
            ],
        }


_MAX_SEQ = 10**19 - 1
"""Above any sequence number one millisecond holds, and short enough for :data:`AFTER_PATTERN`."""


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _rounded(values: list[Any]) -> list[Any]:
    return [round(v, 6) if isinstance(v, float) else v for v in values]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(int(q * len(values)), len(values) - 1)]


@dataclass(slots=True)
class _Row:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)


def top(records: Iterable[LedgerRecord], group_by: str, limit: int) -> dict[str, Any]:
    """The busiest groups (by cost, then tokens, then requests) with their error rates and latency
    percentiles, and the status classes over everything read."""
    rows: dict[str, _Row] = {}
    classes = {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "aborted": 0, "other": 0}
    for rec in records:
        row = rows.get(key := group_of(rec, group_by))
        if row is None:
            row = rows[key] = _Row()
        row.requests += 1
        row.errors += is_error(rec)
        row.input_tokens += rec.input_tokens
        row.output_tokens += rec.output_tokens
        row.cost_usd += rec.cost_usd
        row.latencies.append(rec.latency_ms)
        cls = "aborted" if rec.aborted else f"{rec.status // 100}xx"
        classes[cls if cls in classes else "other"] += 1
    ranked = sorted(
        rows.items(),
        key=lambda kv: (kv[1].cost_usd, kv[1].input_tokens + kv[1].output_tokens, kv[1].requests, kv[0]),
        reverse=True,
    )
    out = []
    for name, row in ranked[:limit]:
        row.latencies.sort()
        out.append(
            {
                "group": name,
                "requests": row.requests,
                "errors": row.errors,
                "error_rate": round(row.errors / row.requests, 6) if row.requests else 0.0,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "cost_usd": round(row.cost_usd, 6),
                "latency_p50_ms": _pct(row.latencies, 0.50),
                "latency_p95_ms": _pct(row.latencies, 0.95),
            }
        )
    total = sum(r.requests for r in rows.values())
    errors = sum(r.errors for r in rows.values())
    return {
        "group_by": group_by,
        "rows": out,
        "groups": len(rows),
        "requests": total,
        "errors": errors,
        "error_rate": round(errors / total, 6) if total else 0.0,
        "status_classes": classes,
    }


RECENT_FIELDS = (
    "ts", "request_id", "tenant", "team", "user", "key_id", "api", "endpoint", "model", "provider",
    "upstream_model", "status", "attempts", "stream", "aborted", "cache", "input_tokens", "output_tokens",
    "cached_tokens", "cost_usd", "latency_ms", "ttft_ms",
)  # fmt: skip
"""What the live tail shows of a request: metadata only (the ledger holds no prompt or answer)."""


async def recent(
    redis: Redis, who: Principal, tenant: str | None, after: str | None, limit: int, *, stream: str = STREAM
) -> dict[str, Any]:
    """The newest ``limit`` requests the caller sees, newer than the stream id ``after`` (exclusive),
    oldest first; ``cursor`` is the newest id looked at (pass it back as ``after``). For a caller
    scoped to one tenant it is the store's clock when the look began (or its own newest id, if later):
    the id of another tenant's request would tell it when that came. ``skipped`` says that more new
    requests than ``limit`` (or :data:`RECENT_SCAN` records) came since ``after``."""
    low = f"({after}" if after else "-"
    rows: list[dict[str, Any]] = []
    cursor, scanned, skipped = after, 0, False
    scoped = who.tenant is not None
    if scoped:  # every id the store gives from now on is above this one (ms before now, last seq)
        sec, usec = await redis.time()
        cursor = f"{int(sec) * 1000 + int(usec) // 1000 - 1}-{_MAX_SEQ}"
        if after is not None and _stream_id(after) > _stream_id(cursor):
            cursor = after
    async for eid, rec in newest_first(redis, low, "+", RECENT_SCAN, stream=stream):
        if scanned == 0 and not scoped:
            cursor = eid
        scanned += 1
        if (tenant is not None and rec.tenant != tenant) or not who.sees(rec.tenant):
            continue
        if not rows and scoped and _stream_id(eid) > _stream_id(cursor or "0-0"):
            cursor = eid  # its own newest, written since the clock was read: not to be shown twice
        if len(rows) == limit:
            skipped = after is not None
            break
        rows.append({"id": eid, **{k: getattr(rec, k) for k in RECENT_FIELDS}})
    else:
        skipped = after is not None and scanned >= RECENT_SCAN
    rows.reverse()
    return {"requests": rows, "cursor": cursor, "skipped": skipped}

"""Reading the usage ledger back: records since a time, JSON lines (once per consumer group), and
per-model summaries. The writer is :mod:`sidegate.features.ledger.ledger`."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from sidegate.features.ledger.ledger import STREAM, LedgerRecord, as_text

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def since_to_id(since: str | float | datetime | None, now: float | None = None) -> str:
    """A stream id from a start time: epoch seconds, a datetime, an ISO date/time, a duration back
    from now (``90m``, ``24h``, ``7d``) or a stream id (``1700000000000-0``). None -> ``0``."""
    if since is None or since == "":
        return "0"
    if isinstance(since, datetime):
        ts = since.timestamp() if since.tzinfo else since.replace(tzinfo=UTC).timestamp()
    elif isinstance(since, (int, float)):
        ts = float(since)
    else:
        text = since.strip()
        if re.fullmatch(r"\d+-\d+", text):
            return text
        dur = _DURATION.match(text)
        if dur:
            ts = (time.time() if now is None else now) - float(dur.group(1)) * _UNIT_S[dur.group(2)]
        elif re.fullmatch(r"\d+(\.\d+)?", text):
            ts = float(text)
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"cannot read {since!r} as a time (epoch s, ISO date, 24h, 7d...)") from None
            ts = parsed.timestamp() if parsed.tzinfo else parsed.replace(tzinfo=UTC).timestamp()
    return f"{max(int(ts * 1000), 0)}-0"


async def iter_records(
    redis: Redis, *, since: str | float | datetime | None = None, stream: str = STREAM, page: int = 1000,
    limit: int | None = None,
) -> AsyncIterator[tuple[str, LedgerRecord]]:  # fmt: skip
    """(entry id, record) pairs oldest first, paged with XRANGE (exclusive restarts)."""
    start = since_to_id(since)
    seen = 0
    while limit is None or seen < limit:
        count = page if limit is None else min(page, limit - seen)
        entries = await redis.xrange(stream, min=start, max="+", count=count)
        if not entries:
            return
        for eid, data in entries:
            seen += 1
            yield as_text(eid), LedgerRecord.from_fields(data)
        if len(entries) < count:
            return
        start = "(" + as_text(entries[-1][0])


def _json_line(eid: str, rec: LedgerRecord) -> str:
    row = {"id": eid, **rec.as_dict()}
    row["ts"] = datetime.fromtimestamp(rec.ts, tz=UTC).isoformat(timespec="milliseconds")
    return orjson.dumps(row).decode() + "\n"


async def export_jsonl(
    redis: Redis,
    out: TextIO,
    since: str | float | datetime | None = None,
    group: str | None = None,
    *,
    stream: str = STREAM,
    consumer: str = "export",
    page: int = 1000,
    limit: int | None = None,
) -> int:
    """Write ledger records as JSON lines (one object per record, ``id`` = stream id, ``ts`` ISO-8601
    UTC). Without ``group``: every record since ``since``. With ``group``: only records that group has
    not acknowledged yet (created at ``since`` on first use), acknowledged after they are written, so
    repeated runs export each record once. Returns the number of records written."""
    if group is None:
        n = 0
        async for eid, rec in iter_records(redis, since=since, stream=stream, page=page, limit=limit):
            out.write(_json_line(eid, rec))
            n += 1
        return n
    try:
        await redis.xgroup_create(stream, group, id=since_to_id(since), mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    n = 0
    cursor = "0"  # first our own pending entries (a previous run that died before XACK), then new ones
    while limit is None or n < limit:
        count = page if limit is None else min(page, limit - n)
        resp = await redis.xreadgroup(group, consumer, {stream: cursor}, count=count)
        entries = resp[0][1] if resp else []
        if not entries:
            if cursor == ">":
                break
            cursor = ">"
            continue
        ids = []
        for eid, data in entries:
            if not data:  # pending entry trimmed away by MAXLEN
                ids.append(eid)
                continue
            out.write(_json_line(as_text(eid), LedgerRecord.from_fields(data)))
            ids.append(eid)
            n += 1
        out.flush()
        await redis.xack(stream, group, *ids)
        if cursor == "0":
            cursor = as_text(entries[-1][0])
    return n


GROUP_FIELDS = ("tenant", "team", "user", "model")
"""What `summarize` can group by (record fields; "" = the request had none, e.g. no team)."""


@dataclass(slots=True)
class UsageSummary:
    model: str
    """The model of this row, or ``*`` when the rows are not grouped by model."""
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    fallbacks: int = 0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    tenant: str | None = None
    team: str | None = None
    user: str | None = None
    """Set when the rows are grouped by them (None otherwise)."""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values.sort()
    return values[min(int(q * len(values)), len(values) - 1)]


async def summarize(
    redis: Redis, tenant: str | None = None, since: str | float | datetime | None = None, *, stream: str = STREAM,
    limit: int = 1_000_000, by: Sequence[str] = ("model",), team: str | None = None, user: str | None = None,
) -> list[UsageSummary]:  # fmt: skip
    """Totals per ``by`` (fields of :data:`GROUP_FIELDS`; per model by default) for one tenant (or all),
    one team and one user (or all), scanning at most ``limit`` records."""
    unknown = set(by) - set(GROUP_FIELDS)
    if unknown or not by:
        raise ValueError(f"group by one or more of {', '.join(GROUP_FIELDS)}")
    rows: dict[tuple[str, ...], UsageSummary] = {}
    lat: dict[tuple[str, ...], list[float]] = {}
    async for _, rec in iter_records(redis, since=since, stream=stream, limit=limit):
        if (
            (tenant is not None and rec.tenant != tenant)
            or (team is not None and rec.team != team)
            or (user is not None and rec.user != user)
        ):
            continue
        key = tuple(getattr(rec, f) for f in by)
        s = rows.get(key)
        if s is None:
            group = dict(zip(by, key, strict=True))
            s = rows[key] = UsageSummary(group.get("model", "*"), tenant=group.get("tenant"),
                                         team=group.get("team"), user=group.get("user"))  # fmt: skip
            lat[key] = []
        s.requests += 1
        s.errors += rec.status >= 400 or rec.aborted
        s.input_tokens += rec.input_tokens
        s.output_tokens += rec.output_tokens
        s.cached_tokens += rec.cached_tokens
        s.cost_usd += rec.cost_usd
        s.cache_hits += rec.cache.startswith("hit")
        s.fallbacks += rec.attempts > 1
        lat[key].append(rec.latency_ms)
    for key, s in rows.items():
        s.latency_p50_ms = _pct(lat[key], 0.50)
        s.latency_p95_ms = _pct(lat[key], 0.95)
    return [rows[k] for k in sorted(rows)]

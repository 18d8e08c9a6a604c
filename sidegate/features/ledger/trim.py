"""How far the ledger stream may be trimmed, and what MAXLEN trimmed that nobody had read.

The rule (docs/observability.md, "The ledger's bound"):
- With an archive: no MAXLEN. The archiver trims (``XTRIM MINID``) only below BOTH its archived
  watermark and every consumer group's acknowledged position: a group's oldest pending (delivered,
  not acknowledged) entry, or, with nothing pending, the entry after its last delivered one.
  Nothing a group has not acknowledged (nor not yet read) is ever trimmed. (Positions only move
  forward while a pass reads them, so the bound stays safe; a group created at an old id during a
  pass may find what it asked for already trimmed, as with any trimming.)
- Without one: ``XADD MAXLEN ~ ledger_maxlen`` is the bound, and the records it trimmed before the
  slowest consumer group read them are reported (``sidegate_ledger_unread_trimmed``).

Works on any :class:`sidegate.store.Store` (``command``): redis-py's parsed replies and the lean
client's raw ones are both read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from sidegate import metrics as m
from sidegate.features.ledger.record import as_text
from sidegate.store import Store

log = logging.getLogger("sidegate.ledger")
KEPT_COUNT_MAX = 100_000
"""Archived records a group holds back are counted up to this many (the gauge reads "at least")."""


def parse_id(eid: Any) -> tuple[int, int]:
    ms, _, seq = as_text(eid).partition("-")
    return int(ms), int(seq or 0)


def format_id(t: tuple[int, int]) -> str:
    return f"{t[0]}-{t[1]}"


def next_id(eid: Any) -> tuple[int, int]:
    """The smallest id after ``eid`` (``XTRIM MINID`` keeps ids >= its argument)."""
    ms, seq = parse_id(eid)
    return (ms, seq + 1) if seq < 2**64 - 1 else (ms + 1, 0)


def _as_map(reply: Any) -> dict[str, Any]:
    if isinstance(reply, dict):
        return {as_text(k): v for k, v in reply.items()}
    it = iter(reply)
    return {as_text(k): v for k, v in zip(it, it, strict=False)}


async def groups(store: Store, stream: str) -> list[dict[str, Any]]:
    """XINFO GROUPS as maps with str keys (``name``, ``last-delivered-id``, ``entries-read``...)."""
    try:
        reply = await store.command("XINFO", "GROUPS", stream)
    except Exception as exc:  # no such key: no groups
        if "no such key" in str(exc).lower():
            return []
        raise
    return [_as_map(g) for g in reply or []]


async def acknowledged_bound(store: Store, stream: str, group: dict[str, Any]) -> tuple[int, int]:
    """The smallest id ``group`` still needs: its oldest pending entry, else the one after the last
    it was delivered. Everything below it the group has read and acknowledged."""
    name = as_text(group["name"])
    summary = await store.command("XPENDING", stream, name)
    if isinstance(summary, dict):
        count, lowest = summary.get("pending", 0), summary.get("min")
    else:
        count, lowest = (summary[0], summary[1]) if summary else (0, None)
    if int(count or 0) > 0 and lowest is not None:
        return parse_id(lowest)
    return next_id(group.get("last-delivered-id") or "0-0")


async def trim_bound(store: Store, stream: str, archived: str) -> tuple[tuple[int, int], bool]:
    """(MINID to trim below, whether a consumer group holds it below the watermark)."""
    bound = next_id(archived)
    held = False
    for g in await groups(store, stream):
        gb = await acknowledged_bound(store, stream, g)
        if gb < bound:
            bound, held = gb, True
    return bound, held


async def trim_archived(store: Store, stream: str, archived: str) -> tuple[int, int]:
    """Trim what is archived (up to ``archived``) and acknowledged by every group: (records
    trimmed, archived records kept because a group has not acknowledged them)."""
    bound, held = await trim_bound(store, stream, archived)
    trimmed = int(await store.command("XTRIM", stream, "MINID", format_id(bound)) or 0)
    kept = 0
    if held:
        kept = len(await store.command("XRANGE", stream, format_id(bound), archived, "COUNT", KEPT_COUNT_MAX))
    return trimmed, kept


async def unread_trimmed(store: Store, stream: str) -> int:
    """Records removed from the head of the stream (MAXLEN) before the slowest consumer group read
    them, over the stream's life (0 without groups: then MAXLEN is the plain retention bound)."""
    try:
        info = _as_map(await store.command("XINFO", "STREAM", stream))
    except Exception as exc:
        if "no such key" in str(exc).lower():
            return 0
        raise
    removed = int(info.get("entries-added") or 0) - int(info.get("length") or 0)
    reads = [g.get("entries-read") for g in await groups(store, stream)]
    known = [int(r) for r in reads if r is not None]
    if removed <= 0 or not known:
        return 0
    return max(0, removed - min(known))


async def watch_unread_trimmed(store: Store, stream: str, every_s: float, timeout_s: float) -> None:
    """The writer's companion with MAXLEN: every ``every_s`` set ``sidegate_ledger_unread_trimmed``
    and log when it grew (MAXLEN is too small for the slowest consumer group)."""
    last = 0
    while True:
        await asyncio.sleep(every_s)
        try:
            n = await asyncio.wait_for(unread_trimmed(store, stream), timeout_s)
        except (RedisError, OSError, TimeoutError):
            continue  # the store is down: the writer reports that
        m.LEDGER_UNREAD_TRIMMED.set(n)
        if n > last:
            log.warning("usage ledger: MAXLEN trimmed %d records before a consumer group read them "
                        "(raise observability.ledger_maxlen, or configure the archive)", n - last)  # fmt: skip
        last = n

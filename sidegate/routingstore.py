"""The routing document's versions in the Redis-protocol store (the runtime source of truth for
providers, models, prices and default policies; sidegate/config/routing.py defines the document).

Layout (all under ``sg:routing``):
- ``sg:routing:version``   counter: the current version (absent or 0: never seeded).
- ``sg:routing:doc:<n>``   string: version n's document, canonical JSON. The last ``KEEP`` versions
  are kept (rollback reaches them); older ones are deleted in the transaction that passes them.
- ``sg:routing:history``   list, newest first: one JSON entry per version (``version``, ``at``,
  ``actor``, ``source``, ``message``, ``digest``, ``changed``: the top-level names that differ
  from the previous version, e.g. ``models.gpt-4o``), trimmed to ``KEEP``.
- ``sg:routing:seeded``    string: the digest of the config file's routing document last seeded
  (a replica restarting with the same file never overwrites changes made live since).
- channel ``sg:routing:changed``: the new version, published with every change.

Readers (extproc, the xDS server) poll ``sg:routing:version`` (one GET) every ``POLL_S`` and load
the document when it moves. Writers change it only through :func:`commit`: one WATCH/MULTI/EXEC
with the version bump, the history entry and the publish (and the caller's audit entry), so no
reader sees a document without its version or a version without its document.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from sidegate.config.routing import digest

VERSION = "sg:routing:version"
HISTORY = "sg:routing:history"
SEEDED = "sg:routing:seeded"
CHANNEL = "sg:routing:changed"
KEEP = 100
POLL_S = 0.25


def doc_key(version: int) -> str:
    return f"sg:routing:doc:{version}"


class VersionConflict(Exception):
    """The document moved since the caller read it (``expect`` did not match): re-read and retry."""

    def __init__(self, expected: int, current: int):
        self.expected, self.current = expected, current
        super().__init__(f"routing document is at version {current}, not {expected}")


@dataclass(slots=True, frozen=True)
class Version:
    number: int
    doc: dict[str, Any]


async def version(redis: Redis) -> int:
    return int(await redis.get(VERSION) or 0)


async def doc_at(redis: Redis, number: int) -> dict[str, Any] | None:
    raw = await redis.get(doc_key(number))
    return None if raw is None else orjson.loads(raw)


async def current(redis: Redis) -> Version | None:
    """The current version and its document; None before the first seed. The document is read
    after the number: a commit in between gives a newer number on the next poll."""
    n = await version(redis)
    if not n:
        return None
    doc = await doc_at(redis, n)
    return None if doc is None else Version(n, doc)


async def history(redis: Redis, limit: int = KEEP) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in await redis.lrange(HISTORY, 0, max(limit, 1) - 1)]


def changed_names(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """`section.name` of every entry that differs (a whole section for `defaults`)."""
    before = before or {}
    out: list[str] = []
    for section in sorted(set(before) | set(after)):
        a, b = before.get(section) or {}, after.get(section) or {}
        if section == "defaults":
            if a != b:
                out.append(section)
            continue
        out += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out


async def commit(
    redis: Redis,
    doc: dict[str, Any],
    *,
    actor: str,
    source: str,
    message: str = "",
    expect: int | None = None,
    seeded: str | None = None,
    also: Callable[[Pipeline, int, dict[str, Any] | None], None] | None = None,
    now: float | None = None,
) -> int:
    """Store `doc` (already validated by the caller with config.routing.with_routing) as the next
    version; returns its number. `expect`: the version the caller's change was based on
    (VersionConflict if it moved). `seeded`: also record it as the config file's digest last seeded.
    `also(pipe, new_version, previous_doc)` queues more commands in the same transaction (the audit
    entry). Retries by itself only when no `expect` was given."""
    at = time.time() if now is None else now
    body = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    for _ in range(50):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(VERSION)
                n = int(await pipe.get(VERSION) or 0)
                if expect is not None and n != expect:
                    raise VersionConflict(expect, n)
                prev_raw = await pipe.get(doc_key(n)) if n else None
                prev = orjson.loads(prev_raw) if prev_raw else None
                new = n + 1
                entry = {"version": new, "at": at, "actor": actor, "source": source, "message": message,
                         "digest": digest(doc), "changed": changed_names(prev, doc)}  # fmt: skip
                pipe.multi()
                pipe.set(doc_key(new), body)
                if new > KEEP:
                    pipe.delete(doc_key(new - KEEP))
                pipe.lpush(HISTORY, orjson.dumps(entry))
                pipe.ltrim(HISTORY, 0, KEEP - 1)
                if seeded is not None:
                    pipe.set(SEEDED, seeded)
                if also is not None:
                    also(pipe, new, prev)
                pipe.set(VERSION, new)
                pipe.publish(CHANNEL, str(new))
                await pipe.execute()
                return new
            except WatchError:
                if expect is not None:
                    raise VersionConflict(expect, await version(redis)) from None
                continue
    raise RuntimeError("routing document: too many concurrent changes, try again")


# --- xds helper's stand-in for contract 4 (the docs-api helper writes the real `seed_file` in this
# module; at merge, keep theirs and delete this block) ---------------------------------------------
async def seed_file(redis: Redis, cfg: Any) -> int | None:
    """Seed `cfg`'s routing document when the store has none or the file's digest differs from
    the one last seeded; the new version, None when nothing changed."""
    from sidegate.config.routing import routing_doc

    doc = routing_doc(cfg)
    d = digest(doc)
    for _ in range(5):
        n = await version(redis)
        if n and (await redis.get(SEEDED) or b"").decode() == d:
            return None
        try:
            return await commit(redis, doc, actor="file", source="file", message="seeded from the config file",
                                expect=n, seeded=d)  # fmt: skip
        except VersionConflict:
            continue
    return None

"""The routing document's versions in the Redis-protocol store (the runtime source of truth for
providers, models, prices and default policies; sidegate/config/routing.py defines the document).

Layout (all under ``{sg}:routing``: the config plane's hash tag, sidegate/store/layout.py; shown below without it):
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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from sidegate.config.root import SidegateConfig
from sidegate.config.routing import digest, inline_secrets, routing_doc
from sidegate.store.layout import CONFIG_PREFIX, queue_publish

VERSION = CONFIG_PREFIX + "routing:version"
HISTORY = CONFIG_PREFIX + "routing:history"
SEEDED = CONFIG_PREFIX + "routing:seeded"
CHANNEL = CONFIG_PREFIX + "routing:changed"
KEEP = 100
POLL_S = 0.25

log = logging.getLogger("sidegate.routing")


def doc_key(version: int) -> str:
    return f"{CONFIG_PREFIX}routing:doc:{version}"


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
                queue_publish(pipe, CHANNEL, str(new))
                await pipe.execute()
                return new
            except WatchError:
                if expect is not None:
                    raise VersionConflict(expect, await version(redis)) from None
                continue
    raise RuntimeError("routing document: too many concurrent changes, try again")


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, list[str]]:
    """What differs between two documents, as `section.name` lists: ``added``, ``removed``,
    ``changed`` (``defaults`` counts as one name)."""
    before, after = before or {}, after or {}
    out: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}
    for name in changed_names(before, after):
        section, _, key = name.partition(".")
        if not key:
            out["changed"].append(name)
            continue
        a, b = before.get(section) or {}, after.get(section) or {}
        out["added" if key not in a else "removed" if key not in b else "changed"].append(name)
    return out


async def seed_file(redis: Redis, cfg: SidegateConfig, *, path: str | None = None) -> int | None:
    """Seed the config file's routing document (docs/control-plane.md, "Seeding"): a new version
    with source ``file`` when the store has none, or when the file's document is not the one last
    seeded (a changed file or ConfigMap wins); None when nothing changed, so a restart with the same
    file leaves live changes alone, or when a provider carries an inline credential (refused like
    the admin API refuses it: logged with its location, never the value). Safe with many replicas
    at once: each attempt watches the version and ``SEEDED`` (or is a commit expecting the version
    it checked), so of two seeders of the same file one creates the version and the other then
    finds it seeded."""
    doc = routing_doc(cfg)
    secrets = inline_secrets(doc)
    if secrets:  # every global viewer reads the store and its history: never seeded (the file's
        # own routing still runs until the store has a version; the error says what to change)
        log.error("config file %s: its routing document is not seeded into the store: %s",
                  path or "config", "; ".join(secrets))  # fmt: skip
        return None
    want = digest(doc)
    actor = f"file:{path or 'config'}"
    for _ in range(50):
        async with redis.pipeline(transaction=True) as pipe:
            await pipe.watch(VERSION, SEEDED)
            n = int(await pipe.get(VERSION) or 0)
            seeded = (await pipe.get(SEEDED) or b"").decode()
            stored = await pipe.get(doc_key(n)) if n else None
            if stored is not None and seeded == want:
                return None
            if stored is not None and digest(orjson.loads(stored)) == want:
                # The store already holds the file's document (put there live): record it as seeded
                # without a version that changes nothing.
                pipe.multi()
                pipe.set(SEEDED, want)
                try:
                    await pipe.execute()
                    return None
                except WatchError:
                    continue
        try:
            return await commit(redis, doc, actor=actor, source="file", message="seeded from the config file",
                                expect=n, seeded=want)  # fmt: skip
        except VersionConflict:
            continue
    raise RuntimeError("routing document: too many concurrent changes while seeding, try again")


async def rollback(
    redis: Redis,
    to: int | None = None,
    *,
    actor: str,
    validate: Callable[[dict[str, Any]], object] | None = None,
    also: Callable[[Pipeline, int, dict[str, Any] | None], None] | None = None,
) -> tuple[int, int]:
    """A NEW version whose document is version ``to``'s (default: the one before the current);
    -> (new version, ``to``). ``validate(doc)`` may refuse it (the process's file may have changed
    since). LookupError: no such version kept; VersionConflict: another change came in between."""
    n = await version(redis)
    target = n - 1 if to is None else to
    doc = await doc_at(redis, target) if 0 < target <= n else None
    if doc is None:
        raise LookupError(f"no version {target} kept (current: {n}; the last {KEEP} are kept)")
    if validate is not None:
        validate(doc)
    new = await commit(redis, doc, actor=actor, source="rollback", message=f"rollback to version {target}",
                       expect=n, also=also)  # fmt: skip
    return new, target

"""The ledger's archive: records older than ``older_than`` written to object storage as gzip JSON
lines, verified, then trimmed from the stream (docs/observability.md, "Archive").

One pass (:func:`archive_once`), run by `sidegate ledger archive` or every ``interval_s`` by
:func:`archive_forever`:

1. read from the archived watermark (``<stream>:archived``, the last id archived) up to the cutoff,
   ``max_records_per_object`` records at a time;
2. write each chunk to ``<url>/<stream>/<yyyy>/<mm>/<dd>/<ms>-<seq, 6 digits>.jsonl.gz`` (the date
   and id of its first record), and verify it (size, and the MD5 ETag or a re-read);
3. only then move the watermark past the chunk;
4. at the end trim below the watermark and every consumer group's acknowledged position
   (:mod:`.trim`).

A crash anywhere repeats at most the last chunk: it starts at the same first id, so its object has
the same name and is overwritten (with the same records, plus any that aged past the cutoff since),
never duplicated. One archiver at a time (a lock key in the store); objects are whole or absent.

Test-only fault points: ``SIDEGATE_TEST_ARCHIVE_CRASH=after_upload`` (or ``after_watermark``)
makes a pass raise :class:`InjectedCrash` right after that step of its first chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from sidegate import metrics as m
from sidegate.config.ledger_archive import LedgerArchiveConfig
from sidegate.features.ledger.ledger import STREAM, LedgerRecord, as_text
from sidegate.features.ledger.reading import _json_line, since_to_id
from sidegate.features.ledger.trim import parse_id, trim_archived
from sidegate.store import RedisPyStore

if TYPE_CHECKING:
    from sidegate.config import SidegateConfig

log = logging.getLogger("sidegate.ledger.archive")

CRASH_ENV = "SIDEGATE_TEST_ARCHIVE_CRASH"
LOCK_TTL_MS = 15 * 60 * 1000


class ArchiveError(RuntimeError):
    """The archive cannot run as configured (a missing package, credentials, a bad object)."""


class ArchiveLocked(ArchiveError):
    """Another archiver holds the lock: its pass is under way (not a failure of this one)."""


class InjectedCrash(RuntimeError):
    """Raised at a test-only fault point (``SIDEGATE_TEST_ARCHIVE_CRASH``)."""


@dataclass(slots=True)
class ArchiveResult:
    objects: list[str] = field(default_factory=list)
    records: int = 0
    trimmed: int = 0
    kept_for_groups: int = 0
    """Archived records still in the stream because a consumer group has not acknowledged them."""
    watermark: str = "0-0"


def watermark_key(stream: str = STREAM) -> str:
    return f"{stream}:archived"


def open_fs(cfg: LedgerArchiveConfig, env: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and root path of ``cfg.url``, credentials from the named variables or
    the provider's own chain; a clear error when the scheme's package is missing."""
    import fsspec

    if not cfg.url:
        raise ArchiveError("no archive configured (observability.ledger_archive.url)")
    env = os.environ if env is None else env
    scheme = cfg.url.split("://", 1)[0] if "://" in cfg.url else "file"
    opts: dict[str, Any] = dict(cfg.storage_options)
    if scheme in ("gs", "gcs"):
        try:
            import gcsfs  # noqa: F401
        except ImportError:
            raise ArchiveError(
                f"{cfg.url}: a gs:// archive needs the `gcsfs` package (pip install gcsfs)"
            ) from None
    if scheme == "s3":
        client_kwargs = dict(opts.pop("client_kwargs", {}))
        for name in ("endpoint_url", "region_name"):
            if name in opts:
                client_kwargs[name] = opts.pop(name)
        if client_kwargs:
            opts["client_kwargs"] = client_kwargs
        for field_name, opt in (("access_key_env", "key"), ("secret_key_env", "secret")):
            var = getattr(cfg, field_name)
            if var:
                if not env.get(var):
                    raise ArchiveError(f"ledger_archive.{field_name}: the variable {var} is not set")
                opts[opt] = env[var]
    try:
        fs, root = fsspec.core.url_to_fs(cfg.url, **opts)
    except ImportError as exc:
        raise ArchiveError(f"{cfg.url}: the filesystem's package is missing: {exc}") from None
    return fs, root.rstrip("/")


def object_path(root: str, stream: str, first_id: str) -> str:
    """Deterministic: a chunk re-written after a crash starts at the same id, so the same name."""
    ms, seq = parse_id(first_id)
    day = datetime.fromtimestamp(ms / 1000, tz=UTC)  # the sequence padded: names sort as ids do
    return f"{root}/{stream.replace(':', '-')}/{day:%Y/%m/%d}/{ms}-{seq:06d}.jsonl.gz"


def encode(entries: list[tuple[Any, Any]]) -> bytes:
    """Gzip JSON lines, one record each (``id``, ISO ``ts``: as `sidegate usage export`), with no
    timestamp in the gzip header so the same records give the same bytes."""
    text = "".join(_json_line(as_text(eid), LedgerRecord.from_fields(data)) for eid, data in entries)
    return gzip.compress(text.encode(), mtime=0)


def upload_verified(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` and check the store holds exactly it (blocking: run in a thread)."""
    parent = path.rsplit("/", 1)[0]
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:  # object stores have no directories to make
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)
    fs.invalidate_cache(parent)
    info = fs.info(path)
    if int(info.get("size", -1)) != len(data):
        raise ArchiveError(f"{path}: stored {info.get('size')} bytes, wrote {len(data)}")
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if etag and "-" not in etag and len(etag) == 32:
        if etag != hashlib.md5(data, usedforsecurity=False).hexdigest():
            raise ArchiveError(f"{path}: stored ETag {etag} is not the MD5 of what was written")
    elif fs.cat_file(path) != data:  # no usable ETag (multipart, other stores): read it back
        raise ArchiveError(f"{path}: what was stored differs from what was written")


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        raise InjectedCrash(f"{CRASH_ENV}={name}")


async def archive_once(
    redis: Redis, cfg: LedgerArchiveConfig, *, fs: Any = None, root: str | None = None, stream: str = STREAM,
    now: float | None = None,
) -> ArchiveResult:  # fmt: skip
    """One pass: archive every record older than ``cfg.older_than`` not archived yet, then trim."""
    if fs is None or root is None:
        fs, root = open_fs(cfg)
    lock, token = f"{stream}:archive-lock", secrets.token_hex(8)
    if not await redis.set(lock, token, nx=True, px=LOCK_TTL_MS):
        raise ArchiveLocked(f"another archiver holds {lock}")
    try:
        return await _pass(redis, cfg, fs, root, stream, since_to_id(cfg.older_than, now), (lock, token))
    finally:
        if as_text(await redis.get(lock) or b"") == token:
            await redis.delete(lock)


async def _hold(redis: Redis, lock: tuple[str, str]) -> None:
    """Still ours? Extend it (a long pass outlives one TTL); two archivers could move the watermark
    back and forth and cut chunks differently, so one that lost the lock stops."""
    if as_text(await redis.get(lock[0]) or b"") != lock[1]:
        raise ArchiveError(f"lost the archive lock {lock[0]} (a pass longer than {LOCK_TTL_MS // 1000} s?)")
    await redis.pexpire(lock[0], LOCK_TTL_MS)


async def _pass(
    redis: Redis,
    cfg: LedgerArchiveConfig,
    fs: Any,
    root: str,
    stream: str,
    cutoff: str,
    lock: tuple[str, str],
) -> ArchiveResult:
    key = watermark_key(stream)
    res = ArchiveResult(watermark=as_text(await redis.get(key) or b"0-0"))
    if res.watermark != "0-0":
        # The gauge belongs to this process: a restarted runner shows the stored watermark from its
        # first pass, not 0 (no data) until records old enough to archive arrive.
        m.LEDGER_ARCHIVE_WATERMARK.set(parse_id(res.watermark)[0] / 1000)
    while True:
        low = "-" if res.watermark == "0-0" else "(" + res.watermark
        entries = await redis.xrange(stream, min=low, max="(" + cutoff, count=cfg.max_records_per_object)
        if not entries:
            break
        first, last = as_text(entries[0][0]), as_text(entries[-1][0])
        path = object_path(root, stream, first)
        # Off the event loop, as the upload: a full chunk (100 000 records) takes ~2 s to encode on
        # the dev box, and `sidegate ledger run` ships to ClickHouse on the same loop meanwhile.
        data = await asyncio.to_thread(encode, entries)
        try:
            await asyncio.to_thread(upload_verified, fs, path, data)
        except Exception:
            m.child(m.LEDGER_ARCHIVE_ERRORS, "upload").inc()
            raise
        _crash_point("after_upload")
        await _hold(redis, lock)
        await redis.set(key, last)
        res.watermark = last
        res.objects.append(path)
        res.records += len(entries)
        m.LEDGER_ARCHIVED.inc(len(entries))
        m.LEDGER_ARCHIVE_OBJECTS.inc()
        m.LEDGER_ARCHIVE_WATERMARK.set(parse_id(last)[0] / 1000)
        log.info("ledger archive: %d records %s..%s -> %s", len(entries), first, last, path)
        _crash_point("after_watermark")
        if len(entries) < cfg.max_records_per_object:
            break
    if res.watermark != "0-0":
        res.trimmed, res.kept_for_groups = await trim_archived(RedisPyStore(redis), stream, res.watermark)
        m.LEDGER_TRIMMED.inc(res.trimmed)
        m.LEDGER_ARCHIVE_BLOCKED.set(res.kept_for_groups)
    return res


async def archive_forever(
    redis: Redis, cfg: LedgerArchiveConfig, *, stream: str = STREAM, stop: asyncio.Event | None = None,
    passes: int | None = None,
) -> int:  # fmt: skip
    """Run a pass every ``cfg.interval_s`` until ``stop`` is set (or ``passes`` ran); a failed pass
    is logged and counted, and the next one retries it. Returns the records archived."""
    fs, root = open_fs(cfg)
    stop = stop or asyncio.Event()
    total, done = 0, 0
    while not stop.is_set() and (passes is None or done < passes):
        started = time.monotonic()
        try:
            res = await archive_once(redis, cfg, fs=fs, root=root, stream=stream)
            total += res.records
        except InjectedCrash:
            raise
        except ArchiveLocked as exc:  # one archiver per store (every `ledger run` has one): not an error
            log.info("ledger archive: pass skipped, %s", exc)
        except Exception as exc:
            m.child(m.LEDGER_ARCHIVE_ERRORS, "pass").inc()
            log.warning("ledger archive pass failed (retried in %.0f s): %s", cfg.interval_s, exc)
        done += 1
        if passes is not None and done >= passes:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(cfg.interval_s - (time.monotonic() - started), 0.0))
    return total


async def archive_forever_for(cfg: SidegateConfig, *, stop: asyncio.Event | None = None) -> int:
    """:func:`archive_forever` for a whole config (the store from ``store.url``/``SIDEGATE_REDIS_URL``):
    what a long-running process (`sidegate ledger run`) starts when ``ledger_archive.url`` is set."""
    from sidegate.store.redispy import client

    url = os.environ.get("SIDEGATE_REDIS_URL") or cfg.store.url
    if not url:
        raise ArchiveError("no store: set store.url or SIDEGATE_REDIS_URL")
    redis = client(url, socket_timeout_s=10.0)
    try:
        return await archive_forever(redis, cfg.observability.ledger_archive, stop=stop)
    finally:
        await redis.aclose()

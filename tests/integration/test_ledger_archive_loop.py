"""The archive pass keeps its blocking work off the event loop (`sidegate ledger run` ships to
ClickHouse and serves /metrics on the same loop): the chunk's gzip encoding as well as its upload
(real valkey-server, a file:// archive)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ledger_ship_helpers import add_records, run
from redis.asyncio import Redis
from valkey_helpers import valkey

from sidegate import metrics as m
from sidegate.config.ledger_archive import LedgerArchiveConfig
from sidegate.features.ledger import archive


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    with valkey() as url:
        yield url


def test_encoding_and_upload_run_off_the_event_loop(
    valkey_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, str] = {}
    real_encode, real_upload = archive.encode, archive.upload_verified

    def encode(entries: list[tuple[Any, Any]]) -> bytes:
        threads["encode"] = threading.current_thread().name
        return real_encode(entries)

    def upload(fs: Any, path: str, data: bytes) -> None:
        threads["upload"] = threading.current_thread().name
        real_upload(fs, path, data)

    monkeypatch.setattr(archive, "encode", encode)
    monkeypatch.setattr(archive, "upload_verified", upload)
    cfg = LedgerArchiveConfig(
        url=f"file://{tmp_path / 'archive'}", older_than="1s", max_records_per_object=10
    )

    async def body(redis: Redis) -> int:
        await add_records(redis, 25)
        res = await archive.archive_once(redis, cfg, now=4_000_000_000.0)
        return res.records

    assert run(valkey_url, body) == 25
    main = threading.main_thread().name
    assert threads and threads["encode"] != main and threads["upload"] != main, threads


def test_a_pass_skipped_for_another_archivers_lock_is_not_an_error(valkey_url: str, tmp_path: Path) -> None:
    """Every `sidegate ledger run` (one per gateway host) runs an archiver; one holds the lock at a
    time. The others' skipped passes must not count as failed passes (an alert's metric)."""
    cfg = LedgerArchiveConfig(url=f"file://{tmp_path / 'archive'}", older_than="1s", interval_s=0.01)
    failed = m.LEDGER_ARCHIVE_ERRORS.labels("pass")

    async def body(redis: Redis) -> int:
        await add_records(redis, 5)
        await redis.set(f"{archive.STREAM}:archive-lock", "another-archiver", px=60_000)
        return await archive.archive_forever(redis, cfg, passes=2)

    before = failed._value.get()
    assert run(valkey_url, body) == 0
    assert failed._value.get() == before

"""The ledger's ClickHouse side: the shipped DDL, rows, deduplication tokens and the two sinks
(a ClickHouse server over HTTP with clickhouse-connect, or ClickHouse in this process with chDB),
behind one small interface the shipper (:mod:`sidegate.features.ledger.ship`) uses.

Both sinks insert the same bytes (JSONEachRow) with the same settings, so what is verified on chDB
(ClickHouse 26.9) holds for a server: an insert carrying an ``insert_deduplication_token`` already
seen within the table's ``non_replicated_deduplication_window`` is dropped, and the spend view's
target table (its own window) drops the view's block too.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from sidegate.config.ledger_ship import LedgerShipConfig
from sidegate.features.ledger.ledger import LedgerRecord

DDL_RESOURCE = "ledger_clickhouse.sql"
COLUMNS = ("id", *(f.name for f in fields(LedgerRecord)))
"""The ledger table's columns: the stream id, then every LedgerRecord field (a test keeps the DDL in step)."""


def ddl_statements(database: str, table: str) -> list[str]:
    """The shipped DDL (sidegate/data/ledger_clickhouse.sql) for ``database.table``, one statement each."""
    text = (resources.files("sidegate") / "data" / DDL_RESOURCE).read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    body = body.replace("{database}", database).replace("{table}", table)
    stmts = (s.strip().removesuffix(";").strip() for s in body.split(";\n"))
    return [s for s in stmts if s]


def dedup_token(ids: Sequence[str]) -> str:
    """The batch's insert_deduplication_token: a digest of its stream ids, so the same batch sent
    again (after a crash between the insert and the XACK) carries the same token."""
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode())
        h.update(b"\n")
    return f"sg-ledger-{len(ids)}-{h.hexdigest()[:40]}"


def _ts(epoch_s: float) -> str:
    ms = max(round(epoch_s * 1000), 0)
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{ms % 1000:03d}"


_UNSIGNED = {"status": 65535, "attempts": 65535, "input_tokens": 2**63, "output_tokens": 2**63, "cached_tokens": 2**63,
             "cache_creation_tokens": 2**63}  # fmt: skip
"""The table's unsigned columns and their bounds: a value outside would fail the whole insert, and a
batch that can never be inserted would stop the shipper (it retries the same batch until it goes in)."""


def row(eid: str, rec: LedgerRecord) -> dict[str, Any]:
    """One ledger table row (``ts`` as DateTime64(3) text in UTC, unsigned columns clamped)."""
    out = {"id": eid, **rec.as_dict()}
    out["ts"] = _ts(rec.ts)
    for name, top in _UNSIGNED.items():
        out[name] = min(max(out[name], 0), top)
    return out


def rows_jsonl(batch: Sequence[tuple[str, LedgerRecord]]) -> bytes:
    """The batch as JSONEachRow, the body both sinks insert."""
    return b"".join(orjson.dumps(row(eid, rec)) + b"\n" for eid, rec in batch)


def insert_settings(token: str) -> dict[str, Any]:
    return {
        "insert_deduplicate": 1,
        "insert_deduplication_token": token,
        # explicit: older servers default it to 0, and then a re-sent batch is counted twice in the view
        "deduplicate_blocks_in_dependent_materialized_views": 1,
        # a record field newer than the table (a Sidegate upgrade before the ALTER TABLE) is left out
        # instead of failing every insert from then on
        "input_format_skip_unknown_fields": 1,
    }


class Sink(Protocol):
    """Where batches go. ``insert`` raises on failure (the shipper retries the same batch)."""

    name: str

    async def open(self) -> None: ...
    async def create_tables(self) -> None: ...
    async def insert(self, body: bytes, token: str) -> None: ...
    async def close(self) -> None: ...


class _Blocking:
    """Runs a blocking client on one thread of its own (chDB is not meant to be called from many)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class ChdbSink:
    """ClickHouse inside this process (chDB, ``chdb:///dir``). One process per directory at a time:
    read the data from another process only after this one closed it."""

    name = "chdb"

    def __init__(self, path: str, database: str, table: str) -> None:
        self.path, self.database, self.table = path, database, table
        self._session: Any = None
        self._run = _Blocking("sidegate-chdb")

    async def open(self) -> None:
        if self._session is not None:  # a retried connect after the tables failed
            return
        from chdb import session

        self._session = await self._run.call(session.Session, self.path)

    def _query(self, sql: str) -> None:
        self._session.query(sql)

    async def create_tables(self) -> None:
        for stmt in ddl_statements(self.database, self.table):
            await self._run.call(self._query, stmt)

    async def insert(self, body: bytes, token: str) -> None:
        opts = ", ".join(
            f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in insert_settings(token).items()
        )
        sql = f"INSERT INTO {self.database}.{self.table} SETTINGS {opts} FORMAT JSONEachRow\n" + body.decode()
        await self._run.call(self._query, sql)

    async def query(self, sql: str, fmt: str = "JSONEachRow") -> list[dict[str, Any]]:
        """Rows of a SELECT (tests and `sidegate ledger ship --check` read through the same process)."""

        def q() -> bytes:
            return bytes(self._session.query(sql, fmt).bytes())

        raw = await self._run.call(q)
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]

    async def close(self) -> None:
        if self._session is not None:
            await self._run.call(self._session.close)
            self._session = None
        self._run.shutdown()


class HttpSink:
    """A ClickHouse server over HTTP(S) (clickhouse-connect), ``http(s)://host:port``."""

    name = "http"

    def __init__(
        self, url: str, database: str, table: str, *, user: str | None, password: str, timeout_s: float
    ) -> None:
        parts = urlsplit(url)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8443 if self.secure else 8123)
        self.database, self.table = database, table
        self.user, self.password, self.timeout_s = user, password, timeout_s
        self._client: Any = None
        self._run = _Blocking("sidegate-clickhouse")

    def _connect(self) -> Any:
        import clickhouse_connect

        return clickhouse_connect.get_client(
            host=self.host, port=self.port, username=self.user, password=self.password, secure=self.secure,
            connect_timeout=self.timeout_s, send_receive_timeout=self.timeout_s,
        )  # fmt: skip

    async def open(self) -> None:
        if self._client is None:
            self._client = await self._run.call(self._connect)

    async def create_tables(self) -> None:
        for stmt in ddl_statements(self.database, self.table):
            await self._run.call(self._client.command, stmt)

    async def insert(self, body: bytes, token: str) -> None:
        def send() -> None:
            self._client.raw_insert(
                f"{self.database}.{self.table}",
                insert_block=body,
                settings=insert_settings(token),
                fmt="JSONEachRow",
            )

        await self._run.call(send)

    async def close(self) -> None:
        if self._client is not None:
            await self._run.call(self._client.close)
            self._client = None
        self._run.shutdown()


def open_sink(cfg: LedgerShipConfig, env: dict[str, str] | None = None) -> ChdbSink | HttpSink:
    """The sink for ``cfg.url`` (not opened yet)."""
    if not cfg.url:
        raise ValueError("observability.ledger_ship.url is not set")
    if cfg.url.startswith("chdb://"):
        if importlib.util.find_spec("chdb") is None:
            raise RuntimeError(
                "a chdb:// ledger_ship.url needs chDB: pip install 'sidegate[chdb]' (chdb-core)"
            )
        return ChdbSink(cfg.url.removeprefix("chdb://"), cfg.database, cfg.table)
    user, password = cfg.credentials(env)
    return HttpSink(cfg.url, cfg.database, cfg.table, user=user, password=password, timeout_s=cfg.timeout_s)

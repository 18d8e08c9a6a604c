"""The ClickHouse side of the ledger shipper without a store: the shipped DDL against the record's
fields, rows, deduplication tokens, the config section, sink choice and the HTTP sink's insert."""

from __future__ import annotations

import asyncio
import re
from dataclasses import fields
from typing import Any

import orjson
import pytest

from sidegate import config as config_mod
from sidegate.config.ledger_ship import LedgerShipConfig
from sidegate.features.ledger.clickhouse import (
    COLUMNS,
    ChdbSink,
    HttpSink,
    ddl_statements,
    dedup_token,
    open_sink,
    row,
    rows_jsonl,
)
from sidegate.features.ledger.ledger import LedgerRecord


def test_ddl_has_a_column_per_record_field_plus_the_stream_id() -> None:
    stmts = ddl_statements("analytics", "usage")
    assert [s.split("(")[0].split(" AS")[0].strip() for s in stmts] == [
        "CREATE DATABASE IF NOT EXISTS analytics",
        "CREATE TABLE IF NOT EXISTS analytics.usage",
        "ALTER TABLE analytics.usage ADD COLUMN IF NOT EXISTS team LowCardinality",
        "ALTER TABLE analytics.usage ADD COLUMN IF NOT EXISTS user LowCardinality",
        "CREATE TABLE IF NOT EXISTS analytics.usage_daily",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS analytics.usage_daily_mv TO analytics.usage_daily",
    ]
    table = stmts[1]
    cols = re.findall(r"^\s{4}(\w+) ", table.split("ENGINE")[0], re.M)
    assert tuple(cols) == COLUMNS == ("id", *(f.name for f in fields(LedgerRecord)))
    assert "ts DateTime64(3, 'UTC')" in table and "ttft_ms Nullable(Float64)" in table
    assert "ORDER BY (tenant, ts, id)" in table
    for s in (stmts[1], stmts[4]):  # both tables keep a deduplication window (the view's target too)
        assert "non_replicated_deduplication_window = 1000" in s
    assert "{" not in "".join(stmts) and not any(s.endswith(";") for s in stmts)


def test_rows_are_json_each_row_with_utc_millisecond_times() -> None:
    rec = LedgerRecord(ts=1765000123.4567, tenant="acme", model="m", stream=True, ttft_ms=None, cost_usd=0.25)
    r = row("1765000123456-0", rec)
    assert r["id"] == "1765000123456-0" and r["ts"] == "2025-12-06 05:48:43.457"
    assert r["stream"] is True and r["ttft_ms"] is None and list(r) == list(COLUMNS)
    odd = row("3-0", LedgerRecord(ts=1.0, status=-1, input_tokens=-5, attempts=70000))
    assert (odd["status"], odd["input_tokens"], odd["attempts"]) == (
        0,
        0,
        65535,
    )  # never a batch ClickHouse refuses
    body = rows_jsonl([("1-0", rec), ("2-0", LedgerRecord(ts=0.0))])
    lines = body.splitlines()
    assert len(lines) == 2 and orjson.loads(lines[1])["ts"] == "1970-01-01 00:00:00.000"


def test_token_is_a_deterministic_digest_of_the_batch_ids() -> None:
    a = dedup_token(["1-0", "2-0", "3-0"])
    assert a == dedup_token(["1-0", "2-0", "3-0"]) and re.fullmatch(r"sg-ledger-3-[0-9a-f]{40}", a)
    assert a != dedup_token(["1-0", "2-0"]) and a != dedup_token(["1-0", "2-0", "3-1"])
    assert dedup_token(["1-0", "23-0"]) != dedup_token(["1-02", "3-0"])  # ids are delimited


def test_config_section() -> None:
    base: dict[str, Any] = {"providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
                            "models": {"m": {"routes": [{"provider": "openai"}]}}}  # fmt: skip
    off = config_mod.parse(dict(base)).observability
    assert (
        off.ledger_ship.url is None
        and off.ledger_metrics_port == 9466
        and off.ledger_ship.group == "clickhouse"
    )
    on = config_mod.parse({**base, "observability": {"ledger_ship": {"url": "https://ch.example:8443",
                           "user_env": "CH_USER", "password_env": "CH_PASSWORD", "batch_size": 500}}})  # fmt: skip
    ship = on.observability.ledger_ship
    assert ship.credentials({"CH_USER": "u", "CH_PASSWORD": "p"}) == ("u", "p")
    assert ship.credentials({}) == (None, "")
    for bad, msg in (
        ({"url": "clickhouse://x"}, "http(s)://host:port"),
        ({"url": "chdb://"}, "needs a directory"),
        ({"url": "http://x:8123", "password_env": "s3cr3t value!"}, "NAME of an environment variable"),
        ({"url": "http://x:8123", "table": "ledger; DROP"}, "plain identifier"),
        ({"url": "http://x:8123", "batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(config_mod.ConfigError, match=re.escape(msg)):
            config_mod.parse({**base, "observability": {"ledger_ship": bad}})


def test_sink_follows_the_url_scheme() -> None:
    chdb = open_sink(LedgerShipConfig(url="chdb:///var/lib/ch", table="usage"))
    assert isinstance(chdb, ChdbSink) and chdb.path == "/var/lib/ch" and chdb.table == "usage"
    http = open_sink(
        LedgerShipConfig(url="https://ch.example", user_env="U", password_env="P"), {"U": "a", "P": "b"}
    )
    assert isinstance(http, HttpSink) and (http.host, http.port, http.secure) == ("ch.example", 8443, True)
    assert (http.user, http.password) == ("a", "b")
    with pytest.raises(ValueError, match="not set"):
        open_sink(LedgerShipConfig())


class _Client:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def raw_insert(self, table: str, column_names: Any = None, insert_block: Any = None, settings: Any = None,
                   fmt: Any = None) -> None:  # fmt: skip
        self.calls.append((table, insert_block, settings, fmt))

    def command(self, sql: str) -> None:
        self.calls.append(("command", sql))

    def close(self) -> None:
        self.calls.append(("close",))


def test_http_sink_sends_the_rows_with_the_deduplication_settings() -> None:
    sink = HttpSink("http://ch:8123", "sidegate", "ledger", user=None, password="", timeout_s=5)
    fake = _Client()
    sink._connect = lambda: fake  # type: ignore[method-assign]

    async def go() -> None:
        await sink.open()
        await sink.create_tables()
        await sink.insert(b'{"id":"1-0"}\n', "sg-ledger-1-abc")
        await sink.close()

    asyncio.run(go())
    assert [c[1].split("(")[0].strip() for c in fake.calls if c[0] == "command"][:2] == [
        "CREATE DATABASE IF NOT EXISTS sidegate", "CREATE TABLE IF NOT EXISTS sidegate.ledger"]  # fmt: skip
    insert = next(c for c in fake.calls if c[0] == "sidegate.ledger")
    assert insert[1] == b'{"id":"1-0"}\n' and insert[3] == "JSONEachRow"
    assert insert[2] == {"insert_deduplicate": 1, "insert_deduplication_token": "sg-ledger-1-abc",
                         "deduplicate_blocks_in_dependent_materialized_views": 1,
                         "input_format_skip_unknown_fields": 1}  # fmt: skip
    assert fake.calls[-1] == ("close",)


def test_cli_has_the_ledger_group_beside_usage() -> None:
    from sidegate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["ledger", "--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit):
        main(["ledger"])  # a subcommand is required


def test_runner_stops_every_job_when_one_fails_and_exits_non_zero() -> None:
    from sidegate.features.ledger.service import run_jobs

    seen: list[str] = []

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()
        seen.append("steady stopped")

    async def broken(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def go() -> tuple[int, int]:
        failed = await asyncio.wait_for(run_jobs([steady, broken], asyncio.Event()), 5)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, stop.set)
        clean = await asyncio.wait_for(run_jobs([steady], stop), 5)
        return failed, clean

    assert asyncio.run(go()) == (1, 0) and seen == ["steady stopped", "steady stopped"]

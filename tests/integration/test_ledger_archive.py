"""The ledger archive against real parts: a valkey-server and moto's S3 server (the S3 wire protocol,
through s3fs exactly as in production): objects hold exactly the records, records leave the stream
only after their object is written and verified, never while a consumer group has not acknowledged
them, and a crash between upload and trim neither duplicates nor loses a record."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from moto.server import ThreadedMotoServer
from redis.asyncio import Redis
from valkey_helpers import run, valkey

from sidegate import cli, config
from sidegate import metrics as m
from sidegate.config.ledger_archive import LedgerArchiveConfig
from sidegate.features.ledger import archive, ledger, reading
from sidegate.features.ledger.ledger import Ledger, LedgerRecord, as_text
from sidegate.ports import free_port
from sidegate.store import RedisPyStore
from sidegate.store.redispy import client

BUCKET = "sg-archive"
KEY_ENV, SECRET_ENV = "TEST_ARCHIVE_KEY_ID", "TEST_ARCHIVE_SECRET"
LATER = time.time() + 8 * 86400  # "now" for the passes: every record written during the test is 8 days old


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    with valkey() as url:
        yield url


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh bucket; credentials only in the variables the config names."""
    monkeypatch.setenv(KEY_ENV, "testing-key-id")
    monkeypatch.setenv(SECRET_ENV, "testing-secret")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing-key-id",
                      aws_secret_access_key="testing-secret", region_name="us-east-1")  # fmt: skip
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if _exists(s3) else []:
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    if not _exists(s3):
        s3.create_bucket(Bucket=BUCKET)
    return s3


def _exists(s3: Any) -> bool:
    return any(b["Name"] == BUCKET for b in s3.list_buckets().get("Buckets", []))


def cfg_for(endpoint: str, bucket: str = BUCKET, **kw: Any) -> LedgerArchiveConfig:
    return LedgerArchiveConfig(url=f"s3://{bucket}/ledger", storage_options={"endpoint_url": endpoint,
                               "region_name": "us-east-1"}, access_key_env=KEY_ENV, secret_key_env=SECRET_ENV,
                               max_records_per_object=100, **kw)  # fmt: skip


async def seed(redis: Redis, start: int, stop: int) -> None:
    led = Ledger(RedisPyStore(redis), maxlen=None, batch_size=64)
    led.start()
    for i in range(start, stop):
        led.submit(LedgerRecord(ts=time.time(), request_id=f"req-{i}", tenant="acme", model="gpt-4o-mini",
                                status=200, input_tokens=i, output_tokens=2, cost_usd=0.001 * i))  # fmt: skip
    await led.stop()


async def stream_ids(redis: Redis) -> list[str]:
    return [rec.request_id async for _, rec in reading.iter_records(redis)]


def archived_rows(s3: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(object keys, every row of every object), objects in key order."""
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))
    rows: list[dict[str, Any]] = []
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        rows += [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
    return keys, rows


async def read_group(redis: Redis, group: str, count: int, ack: bool) -> list[str]:
    resp = await redis.xreadgroup(group, "c1", {ledger.STREAM: ">"}, count=count)
    ids = [eid for eid, _ in resp[0][1]] if resp else []
    if ack and ids:
        await redis.xack(ledger.STREAM, group, *ids)
    return ids


def test_archive_to_s3_and_trim_behind_consumer_groups(valkey_url: str, s3: Any, s3_endpoint: str) -> None:
    cfg = cfg_for(s3_endpoint)
    archived = m.REGISTRY.get_sample_value("sidegate_ledger_archived_total") or 0.0

    async def body(redis: Redis) -> None:
        await seed(redis, 0, 250)
        written = {as_text(e): LedgerRecord.from_fields(d) for e, d in await redis.xrange(ledger.STREAM)}
        ids = list(written)
        await redis.xgroup_create(ledger.STREAM, "clickhouse", id="0")
        await read_group(redis, "clickhouse", 120, ack=True)

        # nothing is old enough yet: no object, nothing trimmed
        res = await archive.archive_once(redis, cfg)
        assert res.records == 0 and res.objects == [] and await redis.xlen(ledger.STREAM) == 250

        res = await archive.archive_once(redis, cfg, now=LATER)
        assert res.records == 250 and len(res.objects) == 3 and res.watermark == ids[-1]
        keys, rows = archived_rows(s3)
        assert [r["id"] for r in rows] == ids  # each record once, in order
        for row in rows:
            rec = written[row.pop("id")]
            assert row["ts"].endswith("+00:00")
            row["ts"] = rec.ts  # ISO in the object; the rest field by field
            assert LedgerRecord(**row) == LedgerRecord.from_fields(rec.to_fields())
        first_day = time.strftime("%Y/%m/%d", time.gmtime(int(ids[0].split("-")[0]) / 1000))
        ms, seq = ids[0].split("-")
        assert keys[0] == f"ledger/sg-ledger/{first_day}/{ms}-{int(seq):06d}.jsonl.gz"
        # the group acknowledged 120: only those left the stream, archived or not
        assert res.trimmed == 120 and res.kept_for_groups == 130
        assert await stream_ids(redis) == [f"req-{i}" for i in range(120, 250)]
        assert await redis.get(archive.watermark_key()) == ids[-1].encode()

        # a second group reads 10 and does not acknowledge them: they stay, whatever the first does
        await redis.xgroup_create(ledger.STREAM, "audit", id="0")
        await read_group(redis, "audit", 10, ack=False)
        await read_group(redis, "clickhouse", 1000, ack=True)
        res = await archive.archive_once(redis, cfg, now=LATER)
        assert res.records == 0 and res.trimmed == 0 and await redis.xlen(ledger.STREAM) == 130
        pending = await redis.xpending(ledger.STREAM, "audit")
        assert pending["pending"] == 10
        await redis.xack(ledger.STREAM, "audit", *[e for e in ids[120:130]])
        res = await archive.archive_once(redis, cfg, now=LATER)
        assert res.trimmed == 10 and (await stream_ids(redis))[0] == "req-130"
        await read_group(redis, "audit", 1000, ack=True)
        res = await archive.archive_once(redis, cfg, now=LATER)
        assert res.trimmed == 120 and await redis.xlen(ledger.STREAM) == 0 and res.kept_for_groups == 0
        assert len(archived_rows(s3)[1]) == 250  # no pass wrote anything twice

    run(valkey_url, body)
    assert m.REGISTRY.get_sample_value("sidegate_ledger_archived_total") == archived + 250


def test_failed_upload_trims_nothing(valkey_url: str, s3: Any, s3_endpoint: str) -> None:
    async def body(redis: Redis) -> None:
        await seed(redis, 0, 30)
        with pytest.raises(Exception, match=r"(?i)bucket"):
            await archive.archive_once(redis, cfg_for(s3_endpoint, bucket="no-such-bucket"), now=LATER)
        assert await redis.xlen(ledger.STREAM) == 30 and await redis.get(archive.watermark_key()) is None
        assert await redis.get(f"{ledger.STREAM}:archive-lock") is None  # a failed pass lets the next one run

    run(valkey_url, body)


@pytest.mark.parametrize("point", ["after_upload", "after_watermark"])
def test_crash_mid_pass_neither_duplicates_nor_loses(
    valkey_url: str, s3: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    cfg = cfg_for(s3_endpoint)

    async def body(redis: Redis) -> None:
        await seed(redis, 0, 150)
        monkeypatch.setenv(archive.CRASH_ENV, point)
        with pytest.raises(archive.InjectedCrash):
            await archive.archive_once(redis, cfg, now=LATER)
        keys, rows = archived_rows(s3)
        assert len(keys) == 1 and len(rows) == 100
        assert await redis.xlen(ledger.STREAM) == 150  # uploaded, not trimmed
        monkeypatch.delenv(archive.CRASH_ENV)
        await seed(redis, 150, 170)  # more records aged meanwhile
        res = await archive.archive_once(redis, cfg, now=LATER)
        keys2, rows2 = archived_rows(s3)
        assert keys2[0] == keys[0] and len(keys2) == 2  # the first object re-written in place, not doubled
        assert [r["request_id"] for r in rows2] == [f"req-{i}" for i in range(170)]
        assert res.trimmed == 170 and await redis.xlen(ledger.STREAM) == 0

    run(valkey_url, body)


def test_cli_one_pass_to_a_directory(
    valkey_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(valkey_url, lambda redis: seed(redis, 0, 5))
    conf = tmp_path / "sidegate.yaml"
    conf.write_text(
        "providers: {p: {api: openai, base_url: 'http://127.0.0.1:9'}}\nmodels: {}\n"
        f"store: {{url: '{valkey_url}'}}\n"
        f"observability: {{ledger_archive: {{url: 'file://{tmp_path}/archive', older_than: 0s}}}}\n"
    )
    time.sleep(0.01)  # records strictly older than "now - 0s"
    assert cli.main(["ledger", "archive", "-c", str(conf)]) == 0
    assert "archived 5 records in 1 objects" in capsys.readouterr().out
    [obj] = list((tmp_path / "archive").rglob("*.jsonl.gz"))
    assert len(gzip.decompress(obj.read_bytes()).splitlines()) == 5
    assert asyncio.run(stream_len(valkey_url)) == 0  # archived and (no consumer group) trimmed


async def stream_len(url: str) -> int:
    redis = client(url, socket_timeout_s=5.0)
    try:
        return int(await redis.xlen(ledger.STREAM))
    finally:
        await redis.aclose()


def test_archive_reads_back_with_clickhouse_s3(valkey_url: str, s3: Any, s3_endpoint: str) -> None:
    """The query docs/observability.md gives, run by ClickHouse (chDB, in-process) against the archive."""
    import chdb

    async def body(redis: Redis) -> None:
        await seed(redis, 0, 40)
        assert (await archive.archive_once(redis, cfg_for(s3_endpoint), now=LATER)).records == 40

    run(valkey_url, body)
    url = f"{s3_endpoint}/{BUCKET}/ledger/sg-ledger/**/*.jsonl.gz"
    query = (
        f"SELECT tenant, model, count() AS requests, sum(input_tokens) AS input, round(sum(cost_usd), 6) AS usd "
        f"FROM s3('{url}', 'testing-key-id', 'testing-secret', 'JSONEachRow') GROUP BY tenant, model"
    )
    rows = [orjson.loads(line) for line in str(chdb.query(query, "JSONEachRow")).splitlines() if line.strip()]
    assert rows == [{"tenant": "acme", "model": "gpt-4o-mini", "requests": 40, "input": sum(range(40)),
                     "usd": round(0.001 * sum(range(40)), 6)}]  # fmt: skip


def test_archive_forever_runs_passes_until_stopped(valkey_url: str, tmp_path: Path) -> None:
    conf = config.parse(
        {"providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:9"}}, "models": {},
         "store": {"url": valkey_url},
         "observability": {"ledger_archive": {"url": f"file://{tmp_path}/a", "older_than": "0s", "interval_s": 0.05}}},
        "test", env={},
    )  # fmt: skip

    async def body(redis: Redis) -> int:
        await seed(redis, 0, 10)
        stop = asyncio.Event()
        task = asyncio.create_task(archive.archive_forever_for(conf, stop=stop))
        for _ in range(100):  # bounded: 5 s
            await asyncio.sleep(0.05)
            if await redis.xlen(ledger.STREAM) == 0:
                break
        await seed(redis, 10, 15)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await redis.xlen(ledger.STREAM) == 0:
                break
        stop.set()
        return await asyncio.wait_for(task, 5.0)

    assert run(valkey_url, body) == 15
    lines = [
        ln
        for obj in sorted((tmp_path / "a").rglob("*.jsonl.gz"))
        for ln in gzip.decompress(obj.read_bytes()).splitlines()
    ]
    assert [orjson.loads(ln)["request_id"] for ln in lines] == [f"req-{i}" for i in range(15)]


def test_trim_bound_reads_both_store_clients(valkey_url: str) -> None:
    """redis-py parses XINFO/XPENDING replies, the lean client returns them raw: the same bound."""
    from sidegate.features.ledger.trim import format_id, next_id, trim_bound
    from sidegate.store import open_store

    async def body(redis: Redis) -> None:
        await seed(redis, 0, 20)
        ids = [as_text(e) for e, _ in await redis.xrange(ledger.STREAM)]
        await redis.xgroup_create(ledger.STREAM, "acked", id="0")
        await read_group(redis, "acked", 15, ack=True)
        await redis.xgroup_create(ledger.STREAM, "pending", id="0")
        await read_group(redis, "pending", 5, ack=True)
        await read_group(redis, "pending", 5, ack=False)
        lean = open_store(valkey_url)
        try:
            for store in (RedisPyStore(redis), lean):
                assert await trim_bound(store, ledger.STREAM, ids[-1]) == (
                    tuple(map(int, ids[5].split("-"))),
                    True,
                )
                assert await trim_bound(store, ledger.STREAM, ids[2]) == (next_id(ids[2]), False)
                assert format_id(next_id(ids[2])) != ids[2]
        finally:
            await lean.aclose()

    run(valkey_url, body)


def test_a_restarted_archiver_reports_the_stored_watermark(valkey_url: str, tmp_path: Path) -> None:
    """The watermark gauge is per process: a new runner's first pass shows the stored watermark even
    when nothing new is old enough to archive (else the dashboard's watermark age reads no data and
    SidegateLedgerArchiveBehind goes quiet after every restart)."""
    cfg = LedgerArchiveConfig(url=f"file://{tmp_path}/a", older_than="1d")

    async def body(redis: Redis) -> tuple[str, float]:
        await seed(redis, 0, 5)
        res = await archive.archive_once(redis, cfg, now=LATER)
        m.LEDGER_ARCHIVE_WATERMARK.set(0)  # what a restarted process starts with
        again = await archive.archive_once(redis, cfg, now=LATER)
        assert again.records == 0
        return res.watermark, m.LEDGER_ARCHIVE_WATERMARK._value.get()

    watermark, gauge = run(valkey_url, body)
    assert gauge == archive.parse_id(watermark)[0] / 1000 > 0

"""Usage ledger against a real valkey-server: write -> Redis Stream -> JSONL export round trip,
consumer-group export, queue-full and store-down drop paths, the `sidegate usage` commands."""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from valkey_helpers import run, valkey

from sidegate import metrics as m
from sidegate.core.completion import Completion
from sidegate.features.ledger import cli as ledger_cli
from sidegate.features.ledger import ledger, reading
from sidegate.features.ledger.ledger import Ledger, LedgerRecord, record_from_completion
from sidegate.ports import free_port
from sidegate.store import RedisPyStore
from sidegate.store.redispy import client
from sidegate.translate.base import Usage

SECRET_KEY = "sgk_abcd1234_very-secret-tenant-key-0000000000"


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    with valkey() as url:
        yield url


def completion(i: int = 0, **kw: object) -> Completion:
    base: dict[str, object] = dict(
        meta={"tenant": "acme" if i % 2 == 0 else "globex", "model": "gpt-4o-mini", "api": "openai",
              "stream": True, "request_id": f"req-{i}", "key_id": "abcd1234", "cache": "miss"},
        provider="openai", upstream_model="gpt-4o-mini-2024-07-18", status=200,
        usage=Usage(input_tokens=100 + i, output_tokens=20, cached_tokens=8), final=True, streamed=True,
        attempt=1, started_at=10.0, first_byte_at=10.2, ended_at=10.5, chunks=5,
    )  # fmt: skip
    base.update(kw)
    return Completion(**base)  # type: ignore[arg-type]


def test_record_fields_round_trip() -> None:
    rec = record_from_completion(
        completion(3, streamed=False, chunks=0), cost_usd=0.0125, now=1_700_000_000.5
    )
    assert rec.ttft_ms is None and rec.latency_ms == pytest.approx(500.0)
    assert LedgerRecord.from_fields({k.encode(): v.encode() for k, v in rec.to_fields().items()}) == rec
    streamed = record_from_completion(completion(), now=1_700_000_000.0)
    assert streamed.ttft_ms == pytest.approx(200.0) and streamed.cache == "miss" and streamed.stream
    whole = record_from_completion(completion(meta={"received_at": 99.0}), now=100.0)
    assert whole.latency_ms == pytest.approx(1000.0)  # gateway wall-clock start wins when present
    assert LedgerRecord.from_fields({"ts": "1.5", "future_field": "x"}).ts == 1.5


def test_write_and_export_round_trip(valkey_url: str) -> None:
    async def body(redis: Redis) -> None:
        led = Ledger(RedisPyStore(redis), maxlen=10_000)
        led.start()
        obs = led.completion_hook(cost=lambda c: 0.001)
        for i in range(50):
            obs(completion(i))
        obs(completion(99, final=False, status=503))  # a retried try is not a request: no record
        assert await led.flush(5.0)
        await led.stop()
        assert led.written == 50 and led.dropped == 0
        assert await redis.xlen(ledger.STREAM) == 50

        out = io.StringIO()
        assert await reading.export_jsonl(redis, out) == 50
        rows = [orjson.loads(line) for line in out.getvalue().splitlines()]
        assert [r["request_id"] for r in rows] == [f"req-{i}" for i in range(50)]
        first = rows[0]
        assert first["tenant"] == "acme" and first["provider"] == "openai" and first["input_tokens"] == 100
        assert first["cost_usd"] == pytest.approx(0.001) and first["ttft_ms"] == pytest.approx(200.0)
        assert first["ts"].endswith("+00:00") and "-" in first["id"]
        assert SECRET_KEY not in out.getvalue()

        # since: only records at/after a stream id; paging with a tiny page size still sees all
        mid = rows[25]["id"]
        out2 = io.StringIO()
        assert await reading.export_jsonl(redis, out2, since=mid, page=7) == 25
        future = io.StringIO()
        assert await reading.export_jsonl(redis, future, since=time.time() + 3600) == 0

    run(valkey_url, body)


def test_consumer_group_export_is_incremental(valkey_url: str) -> None:
    async def body(redis: Redis) -> None:
        led = Ledger(RedisPyStore(redis))
        led.start()
        for i in range(10):
            led.submit(record_from_completion(completion(i)))
        await led.stop()
        first = io.StringIO()
        assert await reading.export_jsonl(redis, first, group="clickhouse", page=3) == 10
        again = io.StringIO()
        assert await reading.export_jsonl(redis, again, group="clickhouse") == 0
        led.start()
        for i in range(10, 14):
            led.submit(record_from_completion(completion(i)))
        await led.stop()
        more = io.StringIO()
        assert await reading.export_jsonl(redis, more, group="clickhouse") == 4
        assert [orjson.loads(x)["request_id"] for x in more.getvalue().splitlines()] == [
            f"req-{i}" for i in range(10, 14)
        ]
        info = await redis.xinfo_groups(ledger.STREAM)
        assert info[0]["pending"] == 0

    run(valkey_url, body)


def test_maxlen_trims_stream(valkey_url: str) -> None:
    async def body(redis: Redis) -> None:
        led = Ledger(RedisPyStore(redis), maxlen=100, batch_size=50)
        led.start()
        for i in range(1000):
            led.submit(record_from_completion(completion(i)))
        await led.stop()
        assert led.written == 1000
        assert 100 <= await redis.xlen(ledger.STREAM) < 1000  # approximate (~) trimming

    run(valkey_url, body)


@pytest.mark.alone  # bounds a duration
def test_queue_full_drops_and_counts(valkey_url: str) -> None:
    async def body(redis: Redis) -> None:
        full = (
            m.REGISTRY.get_sample_value("sidegate_ledger_records_total", {"outcome": "dropped_full"}) or 0.0
        )
        led = Ledger(RedisPyStore(redis), queue_size=5)  # writer not started: nothing drains the queue
        accepted = [led.submit(record_from_completion(completion(i))) for i in range(8)]
        assert accepted == [True] * 5 + [False] * 3 and led.dropped == 3
        assert (
            m.REGISTRY.get_sample_value("sidegate_ledger_records_total", {"outcome": "dropped_full"})
            == full + 3
        )
        t0 = time.perf_counter()
        for i in range(10_000):  # the response path stays cheap even when the ledger is saturated
            led.submit(record_from_completion(completion(i)))
        assert time.perf_counter() - t0 < 2.0
        led.start()
        await led.stop()
        assert await redis.xlen(ledger.STREAM) == 5

    run(valkey_url, body)


def test_store_down_drops_after_retry() -> None:
    async def body() -> None:
        redis = client(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2)  # nothing listens there
        errs = (
            m.REGISTRY.get_sample_value("sidegate_store_errors_total", {"component": "ledger", "op": "xadd"})
            or 0.0
        )
        led = Ledger(RedisPyStore(redis), retry_delay_s=0.01)
        led.start()
        led.submit(record_from_completion(completion()))
        assert await led.flush(5.0)
        await led.stop()
        await redis.aclose()
        assert led.dropped == 1 and led.written == 0
        assert (
            m.REGISTRY.get_sample_value("sidegate_store_errors_total", {"component": "ledger", "op": "xadd"})
            == errs + 2
        )

    asyncio.run(body())


def test_summarize_per_tenant(valkey_url: str) -> None:
    async def body(redis: Redis) -> list[reading.UsageSummary]:
        led = Ledger(RedisPyStore(redis))
        led.start()
        obs = led.completion_hook(cost=lambda c: 0.5)
        for i in range(6):
            obs(completion(i))  # tenants alternate acme/globex
        obs(completion(0, status=429, usage=None))
        obs(
            completion(
                2, attempt=2, meta={"tenant": "acme", "model": "claude-sonnet-4", "cache": "hit_exact"}
            )
        )
        await led.stop()
        return await reading.summarize(redis, tenant="acme")

    rows = run(valkey_url, body)
    assert [r.model for r in rows] == ["claude-sonnet-4", "gpt-4o-mini"]
    gpt = rows[1]
    assert gpt.requests == 4 and gpt.errors == 1 and gpt.input_tokens == 100 + 102 + 104
    assert gpt.cost_usd == pytest.approx(2.0)
    assert rows[0].cache_hits == 1 and rows[0].fallbacks == 1


def test_since_parsing() -> None:
    assert reading.since_to_id(None) == "0"
    assert reading.since_to_id("1700000000000-5") == "1700000000000-5"
    assert reading.since_to_id(1_700_000_000) == "1700000000000-0"
    assert reading.since_to_id("2023-11-14T22:13:20Z") == "1700000000000-0"
    assert reading.since_to_id("24h", now=1_700_086_400.0) == "1700000000000-0"
    with pytest.raises(ValueError):
        reading.since_to_id("yesterday-ish")


def _cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="sidegate")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ledger_cli.add_commands(sub)
    args = ap.parse_args(argv)
    return int(args.func(args))


def test_usage_cli(valkey_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def seed(redis: Redis) -> None:
        led = Ledger(RedisPyStore(redis))
        led.start()
        for i in range(4):
            led.submit(record_from_completion(completion(i), cost_usd=0.25))
        await led.stop()

    run(valkey_url, seed)
    assert _cli(["usage", "--redis-url", valkey_url, "--tenant", "acme"]) == 0
    text = capsys.readouterr().out
    assert "Usage for tenant acme" in text and "gpt-4o-mini" in text and "0.5000" in text
    assert _cli(["usage", "--redis-url", valkey_url, "--tenant", "nobody"]) == 0
    assert "no usage recorded for tenant nobody" in capsys.readouterr().out
    assert _cli(["usage", "--redis-url", valkey_url, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)[0]["requests"] == 4
    out = tmp_path / "usage.jsonl"
    assert _cli(["usage", "--redis-url", valkey_url, "export", "--since", "1h", "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4
    assert "exported 4 records" in capsys.readouterr().err
    assert _cli(["usage", "export", "--redis-url", valkey_url, "--group", "g1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4

"""`sidegate usage` per team and user: the ledger's records grouped and filtered by the levels they carry."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import orjson
import pytest
from redis.asyncio import Redis
from valkey_helpers import run, valkey

from sidegate.features.ledger import cli as ledger_cli
from sidegate.features.ledger import reading
from sidegate.features.ledger.ledger import Ledger, LedgerRecord
from sidegate.store import RedisPyStore

ROWS = [  # tenant, team, user, model, cost
    ("acme", "ml", "ada", "gpt-4o", 1.0),
    ("acme", "ml", "ada", "gpt-4o-mini", 0.5),
    ("acme", "ml", "bob", "gpt-4o", 2.0),
    ("acme", "ml", "", "gpt-4o", 4.0),  # the team's own key
    ("acme", "", "", "gpt-4o", 8.0),  # a key of the tenant alone
    ("globex", "ml", "ada", "gpt-4o", 16.0),  # same names, another tenant
]


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    with valkey() as url:
        yield url


async def _seed(redis: Redis) -> None:
    led = Ledger(RedisPyStore(redis))
    led.start()
    for i, (tenant, team, user, model, cost) in enumerate(ROWS):
        led.submit(LedgerRecord(ts=1_700_000_000 + i, tenant=tenant, team=team, user=user, model=model,
                                status=200, input_tokens=10, cost_usd=cost))  # fmt: skip
    await led.stop()


def _summary(url: str, **kw: object) -> list[reading.UsageSummary]:
    async def body(redis: Redis) -> list[reading.UsageSummary]:
        await _seed(redis)
        return await reading.summarize(redis, **kw)  # type: ignore[arg-type]

    return run(url, body)


def test_group_by_team_and_user(valkey_url: str) -> None:
    rows = _summary(valkey_url, tenant="acme", by=("team",))
    assert [(r.team, r.model, r.requests, r.cost_usd) for r in rows] == [
        ("", "*", 1, 8.0),
        ("ml", "*", 4, 7.5),
    ]
    rows = _summary(valkey_url, tenant="acme", by=("team", "user"))
    assert [(r.team, r.user, r.cost_usd) for r in rows] == [("", "", 8.0), ("ml", "", 4.0), ("ml", "ada", 1.5),
                                                           ("ml", "bob", 2.0)]  # fmt: skip
    rows = _summary(valkey_url, team="ml", user="ada", by=("tenant", "model"))
    assert [(r.tenant, r.model, r.cost_usd) for r in rows] == [
        ("acme", "gpt-4o", 1.0), ("acme", "gpt-4o-mini", 0.5), ("globex", "gpt-4o", 16.0)
    ]  # fmt: skip
    assert [r.model for r in _summary(valkey_url, tenant="acme")] == [
        "gpt-4o",
        "gpt-4o-mini",
    ]  # default: per model
    with pytest.raises(ValueError):
        _summary(valkey_url, by=("colour",))


def test_usage_cli_by_user(valkey_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def seed(redis: Redis) -> None:
        await _seed(redis)

    run(valkey_url, seed)
    ap = argparse.ArgumentParser(prog="sidegate")
    ledger_cli.add_commands(ap.add_subparsers(dest="cmd", required=True))

    def cli(*argv: str) -> str:
        args = ap.parse_args(["usage", "--redis-url", valkey_url, *argv])
        assert args.func(args) == 0
        return capsys.readouterr().out

    out = orjson.loads(cli("--tenant", "acme", "--team", "ml", "--by", "user", "--json"))
    assert [(r["user"], r["requests"], r["cost_usd"]) for r in out] == [
        ("", 1, 4.0),
        ("ada", 2, 1.5),
        ("bob", 1, 2.0),
    ]
    assert "team" not in out[0] and "tenant" not in out[0]  # only the grouping asked for
    text = cli("--tenant", "acme", "--by", "team,user")
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["team", "user", "requests"]
    assert any(line.split()[:3] == ["ml", "ada", "2"] for line in lines)
    assert any(line.split()[:3] == ["-", "-", "1"] for line in lines)  # no team, no user
    with pytest.raises(SystemExit):
        ap.parse_args(["usage", "--by", "colour"])

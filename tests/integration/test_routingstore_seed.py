"""Seeding the config file's routing document into the store (routingstore.seed_file) and rolling
back (routingstore.rollback), against a real Valkey."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import valkey_helpers as vh

from sidegate import routingstore as rs
from sidegate.config import SidegateConfig, parse
from sidegate.config.routing import digest, routing_doc
from sidegate.store.redispy import client


def _cfg(price: float = 2.5, extra_model: bool = False) -> SidegateConfig:
    models = {"gpt-4o": {"routes": [{"provider": "openai"}]}}
    if extra_model:
        models["gpt-4o-mini"] = {"routes": [{"provider": "openai"}]}
    return parse(
        {
            "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K"}},
            "models": models,
            "quota": {"prices": {"gpt-4o": {"input_per_mtok": price, "output_per_mtok": 10}}},
        },
        "test",
    )


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with vh.valkey() as u:
        yield u


def test_seed_once_then_only_when_the_file_changes(url: str) -> None:
    async def go(r: Redis) -> None:
        cfg = _cfg()
        assert await rs.seed_file(r, cfg, path="/etc/sidegate.yaml") == 1
        entry = (await rs.history(r))[0]
        assert entry["source"] == "file" and entry["actor"] == "file:/etc/sidegate.yaml"
        assert (await rs.current(r)) == rs.Version(1, routing_doc(cfg))
        assert (await r.get(rs.SEEDED)).decode() == digest(routing_doc(cfg))
        assert await rs.seed_file(r, cfg) is None  # a restart with the same file
        # a live change, then a restart with the same file: the live change stays
        live = routing_doc(_cfg(extra_model=True))
        assert await rs.commit(r, live, actor="env", source="admin") == 2
        assert await rs.seed_file(r, cfg) is None
        assert (await rs.current(r)).doc == live  # type: ignore[union-attr]
        # the file changes (a ConfigMap): it wins, as a new version
        changed = _cfg(price=3.0)
        assert await rs.seed_file(r, changed) == 3
        assert (await rs.current(r)).doc == routing_doc(changed)  # type: ignore[union-attr]
        assert (await rs.history(r))[0]["changed"] == ["models.gpt-4o-mini", "prices.gpt-4o"]
        assert (await rs.history(r))[0]["actor"] == "file:config"

    vh.run(url, go)


def test_a_store_already_holding_the_files_document_gets_no_new_version(url: str) -> None:
    async def go(r: Redis) -> None:
        cfg = _cfg()
        await rs.commit(r, routing_doc(cfg), actor="env", source="admin")
        assert await rs.seed_file(r, cfg) is None
        assert await rs.version(r) == 1
        assert (await r.get(rs.SEEDED)).decode() == digest(routing_doc(cfg))

    vh.run(url, go)


@pytest.mark.parametrize("seeders", [2, 6])
def test_concurrent_seeders_make_one_version(url: str, seeders: int) -> None:
    """Replicas starting together with the same file: exactly one version."""

    async def go(r: Redis) -> None:
        cfg = _cfg()
        clients = [client(url, 5.0) for _ in range(seeders)]
        try:
            made = await asyncio.gather(*(rs.seed_file(c, cfg) for c in clients))
        finally:
            for c in clients:
                await c.aclose()
        assert sorted(made, key=str) == [1, *[None] * (seeders - 1)]
        assert await rs.version(r) == 1 and len(await rs.history(r)) == 1

    vh.run(url, go)


def test_concurrent_seeders_of_different_files_each_apply_in_turn(url: str) -> None:
    async def go(r: Redis) -> None:
        a, b = _cfg(price=1.0), _cfg(price=2.0)
        clients = [client(url, 5.0) for _ in range(2)]
        try:
            made = await asyncio.gather(rs.seed_file(clients[0], a), rs.seed_file(clients[1], b))
        finally:
            for c in clients:
                await c.aclose()
        assert sorted(made) == [1, 2]  # both differ from what was seeded before them
        final = (await rs.current(r)).doc  # type: ignore[union-attr]
        assert final in (routing_doc(a), routing_doc(b))
        assert (await r.get(rs.SEEDED)).decode() == digest(final)

    vh.run(url, go)


def test_rollback(url: str) -> None:
    async def go(r: Redis) -> None:
        one, two = routing_doc(_cfg()), routing_doc(_cfg(extra_model=True))
        await rs.commit(r, one, actor="env", source="admin")
        await rs.commit(r, two, actor="env", source="admin")
        assert await rs.rollback(r, actor="cli:me") == (3, 1)
        assert (await rs.current(r)).doc == one  # type: ignore[union-attr]
        entry = (await rs.history(r))[0]
        assert entry["source"] == "rollback" and entry["changed"] == ["models.gpt-4o-mini"]
        assert await rs.rollback(r, 2, actor="cli:me") == (4, 2)
        assert (await rs.current(r)).doc == two  # type: ignore[union-attr]
        with pytest.raises(LookupError):
            await rs.rollback(r, 9, actor="cli:me")

        def refuse(doc: dict) -> None:
            raise ValueError("no")

        with pytest.raises(ValueError):
            await rs.rollback(r, 1, actor="cli:me", validate=refuse)
        assert await rs.version(r) == 4

    vh.run(url, go)

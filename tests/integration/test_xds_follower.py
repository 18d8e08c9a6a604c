"""The xDS server's config follower over a real store: it serves the store's routing document,
never an invalid one (the last good stays), and seeds the config file again when it changes."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import controlplane_helpers as h

from sidegate import config, routingstore
from sidegate.config.routing import routing_doc
from sidegate.store.redispy import client
from sidegate.xds.follower import Follower
from sidegate.xds.server import AdsServer

valkey_url = h.valkey_url

DATA = {
    "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:1", "api_key_env": "X"}},
    "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
}


def test_follows_the_store_refuses_bad_documents_and_reseeds_a_changed_file(
    valkey_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "sidegate.yaml"
    path.write_text(yaml.safe_dump(DATA))
    cfg = config.load(path, env={})

    async def body() -> None:
        redis = client(valkey_url)
        await redis.flushall()
        ads = AdsServer(None)
        f = Follower(cfg, path, redis, ads, lambda p: config.load(p, env={}))
        await f.start()
        assert ads.target is not None and ads.target.version == 1 and f.good == 1  # seeded, then served
        doc = routing_doc(cfg)
        bad = {**doc, "models": {"x": {"routes": [{"provider": "nope"}]}}}
        await routingstore.commit(redis, bad, actor="t", source="t")
        assert await f.poll() is None and ads.target.version == 1  # never served; the last good stays
        good = {**doc, "models": {**doc["models"], "y": {"routes": [{"provider": "openai"}]}}}
        n = await routingstore.commit(redis, good, actor="t", source="t")
        assert (await f.poll()) is not None and ads.target.version == n == 3
        # the file changes (a ConfigMap update): seeded as a new version, then served
        changed = {**DATA, "models": {**DATA["models"], "z": {"routes": [{"provider": "openai"}]}}}
        path.write_text(yaml.safe_dump(changed))
        f.last_file_check = time.monotonic() - 10
        f.file_stamp = None
        await f.check_file()
        await f.poll()
        assert ads.target.version == 4
        assert "z" in (await routingstore.current(redis)).doc["models"]
        # the same file again: nothing seeded
        f.file_stamp = None
        await f.check_file()
        assert await routingstore.version(redis) == 4
        await redis.aclose()

    asyncio.run(asyncio.wait_for(body(), 20))

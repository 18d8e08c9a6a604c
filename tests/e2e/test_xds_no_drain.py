"""A provider added to and removed from the direct lane over xDS changes routes and clusters only:
Envoy's listener (LDS) stays as it is, so no client connection is drained. Under a steady load of
keep-alive SDK requests (no SDK retries) and one long paced stream, nothing fails.

(The direct lane's error filter used to list the direct-lane providers in its Lua, so such a change
was an LDS update: Envoy drains the old filter chain's connections, `--drain-time-s`. The entries
now come with the `~direct` routes: sidegate/bootstrap/direct_lane.py `direct_errors_metadata`.)"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from harness import Stack

from sidegate import routingstore
from sidegate.fakes import FakeProviderThread
from sidegate.store.redispy import client

STACK_EXTRA = {"models": {
    "gpt-stream": {"routes": [{"provider": "openai"}]},  # the paced stream's (scripted by model)
}}  # fmt: skip

LDS_STATS = ("listener_manager.lds.update_success", "listener_manager.listener_modified",
             "listener_manager.listener_added", "listener_manager.listener_removed")  # fmt: skip
LOAD_THREADS = 3
STREAM_CHUNKS = 24
CHUNK_DELAY_S = 0.25


@pytest.fixture(scope="module")
def fake_new() -> Iterator[FakeProviderThread]:
    """The provider added live (a third fake)."""
    fp = FakeProviderThread(port=0)
    fp.start()
    yield fp
    fp.stop()


def _store(stack: Stack, op: Callable[[Any], Any]) -> Any:
    async def go() -> Any:
        r = client(stack.sup.redis_url)
        try:
            return await op(r)
        finally:
            await r.aclose()

    return asyncio.run(go())


def _routes_version(stack: Stack) -> str:
    """The routing document version of the routes Envoy serves with (the version header they set)."""
    dump = httpx.get(
        f"{stack.admin_url}/config_dump", params={"resource": "dynamic_route_configs"}, timeout=5
    ).json()
    vhost = dump["configs"][0]["route_config"]["virtual_hosts"][0]
    per = vhost["typed_per_filter_config"]["sidegate.config_version"]
    return per["mutations"]["request_mutations"][0]["append"]["header"]["value"]


def _wait(pred: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_direct_lane_provider_comes_and_goes_without_a_listener_change(
    stack: Stack, fake_openai: FakeProviderThread, fake_new: FakeProviderThread
) -> None:
    fake_new.reset()
    before = {name: stack.stat(name) for name in LDS_STATS}
    assert before["listener_manager.lds.update_success"] is not None  # (xDS mode: the stat exists)
    key = stack.keys["acme"].key
    fake_openai.script([{"model": "gpt-stream", "chunks": STREAM_CHUNKS, "chunk_delay_s": CHUNK_DELAY_S}])

    stop = threading.Event()
    failures: list[str] = []
    done = [0] * LOAD_THREADS

    def load(i: int) -> None:
        # one SDK client per thread: its connection pool keeps connections alive between requests
        c = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=15)
        while not stop.is_set():
            try:
                r = c.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"load {i}"}]
                )
                assert r.choices[0].message.content, r
                done[i] += 1
            except Exception as exc:  # every failure is the finding
                failures.append(repr(exc))

    stream: dict[str, Any] = {"chunks": 0, "finished": False, "error": None}
    started = threading.Event()

    def paced() -> None:
        c = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=60)
        try:
            for chunk in c.chat.completions.create(model="gpt-stream", stream=True,
                                                   messages=[{"role": "user", "content": " ".join(f"w{i}" for i in range(40))}]):  # fmt: skip
                started.set()
                if chunk.choices and chunk.choices[0].delta.content:
                    stream["chunks"] += 1
                if chunk.choices and chunk.choices[0].finish_reason:
                    stream["finished"] = True
        except Exception as exc:
            stream["error"] = repr(exc)
            started.set()

    threads = [threading.Thread(target=load, args=(i,)) for i in range(LOAD_THREADS)]
    streamer = threading.Thread(target=paced)
    for t in threads:
        t.start()
    streamer.start()
    try:
        assert started.wait(10) and stream["error"] is None, stream
        time.sleep(0.3)

        # 1. A new direct-lane provider first in the load's chain (and a model of its own to probe it).
        cur = _store(stack, routingstore.current)
        doc = copy.deepcopy(cur.doc)
        doc["providers"]["openai-new"] = {
            "api": "openai",
            "base_url": fake_new.url,
            "api_key_env": "E2E_OPENAI_KEY",
        }
        doc["models"]["gpt-4o-mini"] = {"routes": [{"provider": "openai-new"}, {"provider": "openai"}]}
        doc["models"]["gpt-probe"] = {"routes": [{"provider": "openai-new"}]}
        added = _store(
            stack,
            lambda r: routingstore.commit(r, doc, actor="test", source="test", message="add openai-new"),
        )
        _wait(lambda: _routes_version(stack) == str(added), 2.0)
        _wait(lambda: any((q.json or {}).get("model") == "gpt-4o-mini" for q in fake_new.requests), 2.0)

        # The new provider's errors get the direct lane's treatment: its entry came with the routes.
        fake_new.script([{"model": "gpt-probe", "status": 401, "error": "bad key"}])
        probe = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=15)
        with pytest.raises(openai.APIStatusError) as err:
            probe.chat.completions.create(model="gpt-probe", messages=[{"role": "user", "content": "probe"}])
        assert err.value.status_code == 502
        assert "Provider 'openai-new' rejected the gateway's credentials." in err.value.response.text
        assert err.value.response.headers["x-sidegate-provider"] == "openai-new"
        time.sleep(0.5)

        # 2. It goes again: the document as it was.
        served_new = len(fake_new.requests)
        removed = _store(
            stack,
            lambda r: routingstore.commit(
                r, cur.doc, actor="test", source="test", message="remove openai-new"
            ),
        )
        _wait(lambda: _routes_version(stack) == str(removed), 2.0)
        time.sleep(0.5)
        assert served_new > 0
        streamer.join(STREAM_CHUNKS * CHUNK_DELAY_S + 20)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        streamer.join(30)

    assert not streamer.is_alive() and stream["error"] is None, stream
    assert stream["finished"] and stream["chunks"] >= STREAM_CHUNKS, stream
    assert failures == [], failures[:5]
    assert min(done) > 0, done
    after = {name: stack.stat(name) for name in LDS_STATS}
    assert after == before  # no listener update: no connection drained
    cds = stack.stat("cluster_manager.cds.update_success")
    assert cds is not None and cds > 0

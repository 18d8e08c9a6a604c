"""Issue 26, "Done when": live changes on two gateway replicas sharing one store, through real Envoy,
under steady load on both fronts (tests/live_helpers.py, tests/live_load.py).

One pair of replicas per front; the changes run one after the other inside one load window, each
measured on both replicas (commit -> the first of two consecutive probes showing it)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from live_changes import Changes, has_cluster, moved, whole
from live_dump import render_differences
from live_helpers import (
    CANARY_AFTER,
    CANARY_BEFORE,
    COST_UPSTREAM,
    LATENCY_UPSTREAM,
    NEW_PRICE,
    PRICED_UPSTREAM,
    UPSTREAM,
    Replica,
    canary_routes,
    current_doc,
    provider_entry,
    replicas,
    slow,
    start_fakes,
    unslow,
    until_applied,
)
from live_load import Load, LongStream

from sidegate.fakes import FakeProviderThread

pytestmark = pytest.mark.e2e
LOAD_MODELS = ["chat", "canary", "priced"]
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeProviderThread]]:
    fps = start_fakes()
    yield fps
    for fp in fps.values():
        fp.stop()


@pytest.fixture(scope="module", params=["ext_proc", "http"])
def reps(request, tmp_path_factory, fakes) -> Iterator[list[Replica]]:
    yield from replicas(request.param, tmp_path_factory.mktemp(f"live-{request.param}"), fakes)


def _status(r: Replica, key: str) -> int:
    return httpx.post(r.base_url + "/v1/chat/completions", json=BODY,
                      headers={"authorization": f"Bearer {key}"}, timeout=10).status_code  # fmt: skip


def _report(what: str, took: list[float]) -> None:
    print(f"{what}: " + ", ".join(f"replica {i} {t * 1000:.0f} ms" for i, t in enumerate(took)))


@pytest.mark.alone  # bounds a duration
def test_key_revocation_and_tenant_limit_apply_on_both_replicas_under_load(reps: list[Replica]) -> None:
    a = reps[0]
    urls = [r.base_url for r in reps]
    victim, limited = a.keys["victim"], a.keys["limited"]
    assert all(_status(r, victim.key) == 200 and _status(r, limited.key) == 200 for r in reps)
    with Load(urls, a.keys["load"].key, LOAD_MODELS) as load:
        time.sleep(0.5)
        longs = [LongStream(u, a.keys["load"].key, "chat-long", i) for i, u in enumerate(urls)]
        time.sleep(0.3)
        with a.admin() as adm:
            assert adm.post(f"/keys/{victim.id}/revoke").status_code == 200
            since = time.monotonic()  # committed: the answer comes after the store's transaction
            revoked = until_applied(reps, lambda r: _status(r, victim.key) == 401, since)
            assert adm.put("/tenants/limited/limits", json={"tpm": 10}).status_code == 200
            since = time.monotonic()
            limited_took = until_applied(reps, lambda r: _status(r, limited.key) == 429, since)
        for s in longs:
            s.result()
        time.sleep(0.3)
    _report("key revoked", revoked)
    _report("tenant limit", limited_took)
    print("load:", load.summary())
    assert not load.failures(), load.failures()[:5]
    assert all(s.complete for s in longs), [s.outcome for s in longs]
    assert max(revoked + limited_took) < 1.0
    assert load.summary()["requests"] > 20


def test_envoy_config_dump_matches_a_fresh_render_on_each_replica(reps: list[Replica]) -> None:
    n, doc = current_doc(reps[0].sup.redis_url)  # type: ignore[union-attr]
    for r in reps:
        assert not render_differences(r, n, doc)


def test_routing_changes_apply_on_both_replicas_under_load(
    reps: list[Replica], fakes: dict[str, FakeProviderThread]
) -> None:
    """Add a model; add a provider to a chain; move weights 100/0 -> 0/100; change a price; remove a
    provider (from the chain, then delete it); a refused change: each on both replicas within 1 s,
    Envoy's dump = a fresh render after each, zero failed requests, every in-flight stream whole."""
    a = reps[0]
    load = Load([r.base_url for r in reps], a.keys["load"].key, LOAD_MODELS)
    ch = Changes(reps, load, check_dump=lambda r: render_differences(r, *ch.current()))
    longs: list[LongStream] = []
    try:
        load.start()
        time.sleep(0.5)
        # 1. a new model (while streams of another model are in flight)
        longs += (streams := ch.longs("chat"))
        since = ch.change("PUT", "/models/fresh", {"routes": [{"provider": "p2", "model": UPSTREAM}]})
        ch.step("add model", since, ch.serves("fresh", "p2"))
        whole(streams)
        # 2. a new provider, first in the chain of `chat`
        longs += (streams := ch.longs("chat"))
        since = ch.change("PUT", "/providers/p3", provider_entry("p3", fakes))
        ch.step("add provider", since, lambda r: has_cluster(r, "p3"), confirm=1)
        since = ch.put_model(
            "chat", [{"provider": "p3", "model": UPSTREAM}, {"provider": "p1", "model": UPSTREAM}]
        )
        s = ch.step("add provider to chain", since, ch.serves("chat", "p3"))
        moved(load, "chat", "p3", since + max(s.took))
        whole(streams)
        # 3. canary weights moved from p1 to p2
        longs += (streams := ch.longs("canary"))
        since = ch.put_model("canary", canary_routes(*CANARY_AFTER))
        s = ch.step(f"weights {CANARY_BEFORE} -> {CANARY_AFTER}", since, ch.serves("canary", "p2"), confirm=4)
        moved(load, "canary", "p2", since + max(s.took))
        whole(streams)
        # 4. a price: the ledger's cost of the next requests on both replicas follows
        longs += (streams := ch.longs("priced"))
        since = ch.change("PUT", f"/prices/{PRICED_UPSTREAM}", NEW_PRICE)
        wall = time.time()
        price = (NEW_PRICE["input_per_mtok"], NEW_PRICE["output_per_mtok"])
        s = ch.step("change a price", since, ch.costs("priced", *price))
        whole(streams)
        priced, load_records = ch.priced(a.keys["load"].id, PRICED_UPSTREAM, wall + max(s.took) + 0.1, *price)
        assert priced == load_records > 0, (priced, load_records)
        print(f"load requests after the new price: {load_records}, all priced by it")
        # 5. remove a provider: refused while routed, then out of the chain, then deleted (its
        # cluster drains: a stream through it is still in flight when it goes)
        streams = ch.longs("chat")
        refused = ch.call("DELETE", "/providers/p3", expect=409)
        assert "chat" in str(refused), refused
        since = ch.put_model("chat", [{"provider": "p1", "model": UPSTREAM}])
        s = ch.step("remove provider from chain", since, ch.serves("chat", "p1"))
        assert all(x.is_alive() for x in streams)  # still streaming from p3 when it goes
        since = ch.change("DELETE", "/providers/p3")
        ch.step("delete provider", since, lambda r: not has_cluster(r, "p3"), confirm=1)
        moved(load, "chat", "p1", since)
        whole(streams, via="p3")
        # 6. a bad change is refused with its location; nothing moves
        before = ch.version()
        bad = ch.call("PUT", "/models/chat", {"routes": [{"provider": "nope"}]}, expect=400)
        assert any("models.chat.routes.0.provider" in p for p in bad["error"]["problems"]), bad
        assert ch.version() == before
        since = time.monotonic()
        time.sleep(0.5)
        assert all(ch.ask(r, "chat") == (200, "p1") for r in reps for _ in range(3))
        moved(load, "chat", "p1", since)
    finally:
        load.stop()
        ch.close()
    print(ch.report())
    print("load:", load.summary())
    assert not load.failures(), ch.explain(load.failures())
    assert all(s.complete for s in longs), [s.outcome for s in longs if not s.complete]
    slow = [(s.name, s.took) for s in ch.steps if max(s.took) >= 1.0]
    assert not slow, slow


@pytest.mark.alone  # bounds a duration
def test_cost_and_latency_policies_follow_prices_and_slowness_on_both_replicas(
    reps: list[Replica], fakes: dict[str, FakeProviderThread]
) -> None:
    """Cost-based routing picks the cheaper of two healthy providers and moves when a price
    changes (live, through the API); latency-based routing moves away from a slowed provider."""
    load = Load([r.base_url for r in reps], reps[0].keys["load"].key, ["cheap", "quick"], workers=2)
    ch = Changes(reps, load)
    try:
        load.start()
        since = time.monotonic()
        ch.step("cost: the cheaper (p1)", since, ch.serves("cheap", "p1"), confirm=3)
        since = ch.change(
            "PUT", f"/prices/{COST_UPSTREAM['p1']}", {"input_per_mtok": 5.0, "output_per_mtok": 10.0}
        )
        s = ch.step("cost: p1's price rises -> p2", since, ch.serves("cheap", "p2"), confirm=3)
        moved(load, "cheap", "p2", since + max(s.took))
        # latency: p2 a little slow -> p1 everywhere; then p1 much slower -> p2 everywhere
        since = time.monotonic()
        slow(fakes["p2"], LATENCY_UPSTREAM, 0.15)
        ch.step("latency: p2 slowed -> p1", since, ch.serves("quick", "p1"), confirm=3, timeout_s=15.0)
        since = time.monotonic()
        slow(fakes["p1"], LATENCY_UPSTREAM, 0.5)
        unslow(fakes["p2"])
        s = ch.step(
            "latency: p1 slowed more -> p2", since, ch.serves("quick", "p2"), confirm=3, timeout_s=15.0
        )
        moved(load, "quick", "p2", since + max(s.took), slack_s=0.6, share=0.9)
    finally:
        load.stop()
        ch.close()
        for name in ("p1", "p2"):  # the module's other tests keep their fakes quick
            unslow(fakes[name])
    print(ch.report())
    print("load:", load.summary())
    assert not load.failures(), ch.explain(load.failures())
    assert max(ch.steps[1].took) < 1.0
    assert max(s.took) < 10.0

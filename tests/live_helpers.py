"""Two gateway replicas sharing one store, behind real Envoy, for the live-routing tests (issue 26).

Every provider is its own fake answering ``from <name> ...``, so the text of any answer (streamed
or not, through either SDK) names the provider that served it. Each model has a ``<model>-long``
twin whose routes ask the same providers for the upstream model ``LONG_UPSTREAM``: the fakes pace
those streams over ~2 s (their default behaviour), so a stream can be in flight through exactly the
providers, routes and clusters a change touches. Changes go to the store (``routingstore.commit``)
or through the admin API; :func:`until_applied` measures how long each replica takes to show them.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from harness import ADMIN_TOKEN, FRONT_SERVICES, Stack
from redis.asyncio import Redis

from sidegate import routingstore
from sidegate.fakes import FakeProviderThread
from sidegate.ports import free_port, free_port_block
from sidegate.store.redispy import client

T = TypeVar("T")

PROVIDERS = ("p1", "p2", "p3")
"""One fake each. p3 is not in the initial document: a change adds it."""
UPSTREAM = "m"
LONG_UPSTREAM = "m-long"
LONG_CHUNKS = 20
LONG_CHUNK_DELAY_S = {"p1": 0.1, "p2": 0.1, "p3": 0.25}
"""Seconds between a long stream's events, per provider: p3's last 5 s, so that one started before
p3 leaves its chain is still under way when p3 is deleted a little later."""
ANSWER_WORDS = " ".join(f"w{i}" for i in range(LONG_CHUNKS))
"""Enough words that a long stream really comes in LONG_CHUNKS pieces."""
PRICED_UPSTREAM = "m-priced"
COST_UPSTREAM = {"p1": "m-cost-1", "p2": "m-cost-2"}
"""`cheap` (cost policy): p1's upstream model is the cheaper one until a change makes it dearer."""
LATENCY_UPSTREAM = "m-lat"


def answer_text(provider: str) -> str:
    return f"from {provider} {ANSWER_WORDS}"


def provider_of(text: str | None) -> str | None:
    """The provider an answer came from (None: not one of the fakes' answers)."""
    parts = (text or "").split()
    return parts[1] if len(parts) == LONG_CHUNKS + 2 and parts[0] == "from" else None


def start_fakes() -> dict[str, FakeProviderThread]:
    fakes: dict[str, FakeProviderThread] = {}
    try:
        for name in PROVIDERS:
            fp = FakeProviderThread(port=0, fixed_text=answer_text(name))
            fp.start()
            fakes[name] = fp
            fp.provider.name = name  # (for pace_long_streams)
            pace_long_streams(fp)
    except BaseException:
        for fp in fakes.values():
            fp.stop()
        raise
    return fakes


def pace_long_streams(fp: FakeProviderThread) -> None:
    """The fake's default: LONG_UPSTREAM streams in LONG_CHUNKS events LONG_CHUNK_DELAY_S apart."""
    delay = LONG_CHUNK_DELAY_S[fp.provider.name]
    fp.set_default({"model": LONG_UPSTREAM, "chunks": LONG_CHUNKS, "chunk_delay_s": delay})


def slow(fp: FakeProviderThread, model: str, delay_s: float) -> None:
    """Every later `model` request to `fp` waits `delay_s` before its answer's headers (a queued
    behaviour of unlimited uses: the fake's default, the long streams' pacing, stays)."""
    fp.script([{"model": model, "delay_s": delay_s, "times": -1}])


def unslow(fp: FakeProviderThread) -> None:
    """Undo `slow` (and any other script): normal answers, long streams paced."""
    fp.reset()
    pace_long_streams(fp)


def provider_entry(name: str, fakes: dict[str, FakeProviderThread]) -> dict[str, Any]:
    return {"api": "openai", "base_url": fakes[name].url, "api_key_env": "E2E_OPENAI_KEY"}


def with_twins(models: dict[str, Any]) -> dict[str, Any]:
    """`models` plus a `<name>-long` twin of each model without a routing policy (same routes,
    upstream model LONG_UPSTREAM)."""
    out = {k: v for k, v in models.items() if not k.endswith("-long")}
    for name, m in list(out.items()):
        if "policy" in m:
            continue
        twin = copy.deepcopy(m)
        for r in twin["routes"]:
            r["model"] = LONG_UPSTREAM
        out[f"{name}-long"] = twin
    return out


CANARY_BEFORE, CANARY_AFTER = (100, 0), (0, 100)
"""`canary`'s weights (p1, p2) before and after the move (weight 0: no share of first tries)."""


def canary_routes(w1: int, w2: int) -> list[dict[str, Any]]:
    """`canary`'s chain: p1 and p2 at one priority, weighted w1/w2."""
    return [{"provider": "p1", "model": UPSTREAM, "priority": 0, "weight": w1},
            {"provider": "p2", "model": UPSTREAM, "priority": 0, "weight": w2}]  # fmt: skip


NEW_PRICE = {"input_per_mtok": 7000.0, "output_per_mtok": 9000.0}
"""`PRICED_UPSTREAM`'s price after the change (before: 1000/2000)."""


def initial_routing(fakes: dict[str, FakeProviderThread]) -> dict[str, Any]:
    """The file's routing sections: providers p1, p2; models `chat` (p1), `canary` (p1 and p2 at one
    priority, p1 first), `priced` (p2, priced upstream model) and their long twins; the price table."""
    models = {
        "chat": {"routes": [{"provider": "p1", "model": UPSTREAM}]},
        "canary": {"routes": canary_routes(*CANARY_BEFORE)},
        "priced": {"routes": [{"provider": "p2", "model": PRICED_UPSTREAM}]},
        # routing policies: the cheapest of p1/p2 by the price table; the fastest of p1/p2
        "cheap": {"routes": [{"provider": "p1", "model": COST_UPSTREAM["p1"]}, {"provider": "p2", "model": COST_UPSTREAM["p2"]}],
                  "policy": {"kind": "cost"}},
        "quick": {"routes": [{"provider": "p1", "model": LATENCY_UPSTREAM}, {"provider": "p2", "model": LATENCY_UPSTREAM}],
                  "policy": {"kind": "latency"}},
    }  # fmt: skip
    return {
        "providers": {n: provider_entry(n, fakes) for n in ("p1", "p2")},
        "models": with_twins(models),
        "quota": {
            "prices": {
                PRICED_UPSTREAM: {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0},
                COST_UPSTREAM["p1"]: {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                COST_UPSTREAM["p2"]: {"input_per_mtok": 2.0, "output_per_mtok": 4.0},
            }
        },
    }


TENANT_KEYS = {"load": ["load"], "probe": ["probe0", "probe1"], "limited": ["limited"], "victim": ["victim"]}
"""Keys by tenant: the load's, one probe key per replica (its ledger records say which replica),
a tenant whose limits change, a key that gets revoked."""


@dataclass
class Replica(Stack):
    """One gateway replica: a whole stack (Envoy, services, admin API). The first (`template` None)
    has the embedded store; the others get a copy of its config with ports of their own and its
    store's URL, so all of them serve the same keys, tenants and routing from one store."""

    routing: dict[str, Any] = field(default_factory=dict)
    template: dict[str, Any] | None = None
    store_url: str | None = None

    def config(self) -> dict[str, Any]:
        if self.template is not None:
            data = copy.deepcopy(self.template)
            _fresh_ports(data)
            data["store"] = {**data.get("store", {}), "url": self.store_url}
            return data
        data = super().config()
        data["providers"] = copy.deepcopy(self.routing["providers"])
        data["models"] = copy.deepcopy(self.routing["models"])
        data.setdefault("quota", {})["prices"] = copy.deepcopy(self.routing["quota"]["prices"])
        data["services"]["xds_port"] = free_port()
        data["tenants"] = {t: {"keys": [self._key(k, t) for k in ks]} for t, ks in TENANT_KEYS.items()}
        return data

    def admin(self) -> httpx.Client:
        assert self.sup is not None
        url = f"http://127.0.0.1:{self.sup.cfg.services.admin_port}/admin/v1"
        return httpx.Client(base_url=url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)


_PORT_BLOCKS = ("authz_port", "extproc_port", "front_port", "lean_port")  # one port per worker from there on


def _fresh_ports(data: dict[str, Any]) -> None:
    """New free ports for every `*port` setting of the listener and services (0 stays 0: off)."""
    for section in ("listener", "services"):
        for k, v in data.get(section, {}).items():
            if k.endswith("port") and isinstance(v, int) and v:
                data[section][k] = free_port_block(4) if k in _PORT_BLOCKS else free_port()


def replicas(
    front: str, workdir: Path, fakes: dict[str, FakeProviderThread], n: int = 2
) -> Iterator[list[Replica]]:
    """`n` started replicas behind `front` (a key of harness.FRONT_SERVICES) sharing the first's
    store, stopped (last first: the store goes last) when the generator is closed."""
    extra = {"services": dict(FRONT_SERVICES[front])}
    first = Replica(
        workdir / "r0", fakes["p1"].url, fakes["p2"].url, extra=extra, routing=initial_routing(fakes)
    )
    started: list[Replica] = []
    try:
        first.start()
        started.append(first)
        assert first.sup is not None
        for i in range(1, n):
            r = Replica(workdir / f"r{i}", first.openai_url, first.anthropic_url, extra=extra,
                        template=first.cfg_data, store_url=first.sup.redis_url)  # fmt: skip
            r.keys = dict(first.keys)
            r.start()
            started.append(r)
        yield started
    finally:
        for r in reversed(started):
            r.stop()


# -- the store ------------------------------------------------------------------------------------


def store(url: str, fn: Callable[[Redis], Awaitable[T]]) -> T:
    """`fn` on a fresh client of the replicas' store (never flushed: the stacks live in it)."""

    async def main() -> T:
        redis = client(url, socket_timeout_s=5.0)
        try:
            return await fn(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def current_doc(url: str) -> tuple[int, dict[str, Any]]:
    v = store(url, routingstore.current)
    assert v is not None, "the store has no routing document"
    return v.number, copy.deepcopy(v.doc)


def commit_doc(url: str, doc: dict[str, Any], message: str = "") -> int:
    """Commit `doc` (long twins refreshed) straight to the store, as the admin API would after
    validating it; returns the new version."""
    doc = {**doc, "models": with_twins(doc["models"])}
    return store(url, lambda r: routingstore.commit(r, doc, actor="e2e", source="test", message=message))


# -- measuring a change ---------------------------------------------------------------------------


def until_applied(
    reps: list[Replica],
    shows: Callable[[Replica], bool],
    since: float,
    timeout_s: float = 5.0,
    confirm: int = 2,
) -> list[float]:
    """Seconds from `since` (time.monotonic()) until each replica shows the change: the end of the
    first of `confirm` consecutive probes `shows(replica)` answering True. Polls every replica
    at once; raises AssertionError naming the replicas that did not within `timeout_s`."""
    took: list[float | None] = [None] * len(reps)

    def poll(i: int) -> None:
        deadline = since + timeout_s
        first: float | None = None
        streak = 0
        while time.monotonic() < deadline:
            ok = shows(reps[i])
            now = time.monotonic()
            if ok:
                first = now if streak == 0 else first
                streak += 1
                if streak >= confirm:
                    took[i] = (first or now) - since
                    return
            else:
                streak = 0
            time.sleep(0.01)

    threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(len(reps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 30)
    late = [i for i, t in enumerate(took) if t is None]
    assert not late, f"replicas {late} did not show the change within {timeout_s}s"
    return [t for t in took if t is not None]

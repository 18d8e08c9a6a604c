"""The changes of issue 26's "Done when", each applied through the admin API under load and measured
on every replica: probes (one request each, with the replica's own probe key) that reveal a change,
and the ledger's newest records for a price change.

`Changes` keeps the numbers: per step, commit -> applied on each replica, and Envoy's config dump
matching a fresh render (tests/live_dump.py) on each replica afterwards.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from live_helpers import Replica, provider_of, until_applied, with_twins
from live_load import Load, LongStream, Outcome

from sidegate.features.ledger.ledger import STREAM, LedgerRecord
from sidegate.store.redispy import client
from sidegate.wire import cluster_name, direct_cluster_name, try_cluster_name


@dataclass
class Step:
    name: str
    since: float  # its commit (time.monotonic())
    took: list[float]  # commit -> applied, per replica (s)
    dump_s: list[float] = field(default_factory=list)  # commit -> Envoy's dump matching the render


@dataclass
class Changes:
    reps: list[Replica]
    load: Load
    steps: list[Step] = field(default_factory=list)
    check_dump: Callable[[Replica], list[str]] | None = None
    """The differences between a replica's config dump and a fresh render (empty: they match)."""
    _http: dict[int, httpx.Client] = field(default_factory=dict)

    # -- the admin API (always the first replica's: every replica follows the one store) --------

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> dict[str, Any]:
        with self.reps[0].admin() as adm:
            r = adm.request(method, path, json=body)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def version(self) -> int:
        return int(self.call("GET", "/routing")["version"])

    def current(self) -> tuple[int, dict[str, Any]]:
        """The routing document's current (version, document)."""
        got = self.call("GET", "/routing")
        return int(got["version"]), got["doc"]

    def change(self, method: str, path: str, body: Any = None) -> float:
        """A change through the admin API; returns when it was committed (time.monotonic(): the
        answer comes after the store's transaction), where its measurement starts."""
        self.call(method, path, body)
        return time.monotonic()

    def put_model(self, name: str, routes: list[dict[str, Any]], message: str = "") -> float:
        """The model's new chain and its long twin's, as ONE version (`PUT /routing` with the whole
        document, expecting the version it was read at); returns when it was committed."""
        n, doc = self.current()
        doc["models"][name] = {**doc["models"][name], "routes": routes}
        doc["models"] = with_twins(doc["models"])
        body = {"doc": doc, "message": message or f"{name}: new chain", "expect_version": n}
        return self.change("PUT", "/routing", body)

    # -- probes ----------------------------------------------------------------------------------

    def ask(self, r: Replica, model: str) -> tuple[int, str | None]:
        """One request for `model` with the replica's probe key: (status, serving provider)."""
        i = self.reps.index(r)
        http = self._http.get(i) or self._http.setdefault(i, httpx.Client(base_url=r.base_url, timeout=10))
        body = {"model": model, "messages": [{"role": "user", "content": "probe"}]}
        resp = http.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {r.keys[f'probe{i}'].key}"}
        )
        if resp.status_code != 200:
            return resp.status_code, None
        return 200, provider_of(resp.json()["choices"][0]["message"]["content"])

    def serves(self, model: str, provider: str) -> Callable[[Replica], bool]:
        return lambda r: self.ask(r, model) == (200, provider)

    def costs(self, model: str, in_per_mtok: float, out_per_mtok: float) -> Callable[[Replica], bool]:
        """A probe of `model` whose ledger record (the probe key's newest) is priced so."""

        def probe(r: Replica) -> bool:
            i = self.reps.index(r)
            sent = time.time()
            if self.ask(r, model)[0] != 200:
                return False
            rec = self.ledger_record(self.reps[0].keys[f"probe{i}"].id, sent)
            want = (rec.input_tokens * in_per_mtok + rec.output_tokens * out_per_mtok) / 1e6
            return abs(rec.cost_usd - want) <= 1e-9 + 1e-6 * want

        return probe

    def priced(
        self, key_id: str, upstream: str, after: float, in_per_mtok: float, out_per_mtok: float
    ) -> tuple[int, int]:
        """(records priced so, records) among the ledger's newest of `key_id` for `upstream` of
        requests started after `after` (wall clock)."""
        recs = [r for r in asyncio.run(_newest(self.reps[0].sup.redis_url, 5000))  # type: ignore[union-attr]
                if r.key_id == key_id and r.upstream_model == upstream and r.ts > after]  # fmt: skip
        want = [(r.input_tokens * in_per_mtok + r.output_tokens * out_per_mtok) / 1e6 for r in recs]
        return sum(abs(r.cost_usd - w) <= 1e-9 + 1e-6 * w for r, w in zip(recs, want, strict=True)), len(recs)

    def ledger_record(self, key_id: str, since: float, timeout_s: float = 3.0) -> LedgerRecord:
        """The newest ledger record of `key_id` written for a request started after `since` (wall)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for rec in asyncio.run(_newest(self.reps[0].sup.redis_url)):  # type: ignore[union-attr]
                if rec.key_id == key_id and rec.ts >= since - 0.005:
                    return rec
            time.sleep(0.02)
        raise AssertionError(f"no ledger record of key {key_id} within {timeout_s}s")

    # -- a step ------------------------------------------------------------------------------------

    def step(
        self,
        name: str,
        since: float,
        shows: Callable[[Replica], bool],
        confirm: int = 2,
        timeout_s: float = 5.0,
    ) -> Step:
        """Measure `name` (committed at `since`) on every replica, then check each one's config dump."""
        took = until_applied(self.reps, shows, since, timeout_s=timeout_s, confirm=confirm)
        s = Step(name, since, took)
        if self.check_dump is not None:
            for r in self.reps:
                s.dump_s.append(self.dump_matches(r, since))
        self.steps.append(s)
        return s

    def dump_matches(self, r: Replica, since: float, timeout_s: float = 5.0) -> float:
        assert self.check_dump is not None
        problems: list[str] = []
        while time.monotonic() - since < timeout_s:
            problems = self.check_dump(r)
            if not problems:
                return time.monotonic() - since
            time.sleep(0.1)
        raise AssertionError(
            f"{r.base_url}: Envoy's config dump differs from a fresh render:\n" + "\n".join(problems)[:4000]
        )

    def longs(self, model: str) -> list[LongStream]:
        """A paced stream of `model`'s long twin on every replica, under way when this returns."""
        key = self.reps[0].keys["load"].key
        streams = [LongStream(r.base_url, key, f"{model}-long", i) for i, r in enumerate(self.reps)]
        time.sleep(0.3)  # their first events have arrived: in flight through the current routes
        return streams

    def report(self) -> str:
        lines = []
        for s in self.steps:
            applied = ", ".join(f"r{i} {t * 1000:.0f} ms" for i, t in enumerate(s.took))
            dump = ", ".join(f"r{i} {t * 1000:.0f} ms" for i, t in enumerate(s.dump_s))
            lines.append(f"{s.name}: applied {applied}" + (f"; dump = render {dump}" if dump else ""))
        return "\n".join(lines)

    def explain(self, outcomes: list[Outcome]) -> str:
        """Failed requests against the steps (which change each one followed), for an assertion."""
        lines = [f"{len(outcomes)} failed requests"]
        for o in outcomes[:8]:
            step = max((s for s in self.steps if s.since <= o.started), key=lambda s: s.since, default=None)
            after = f"{o.started - step.since:+.3f}s after {step.name!r}" if step else "before any change"
            lines.append(
                f"r{o.replica} {o.model} {o.sdk} stream={o.stream} {after}: {o.status} {o.error[:160]}"
            )
        return "\n".join(lines)

    def close(self) -> None:
        for h in self._http.values():
            h.close()


async def _newest(url: str, count: int = 200) -> list[LedgerRecord]:
    redis = client(url, socket_timeout_s=5.0)
    try:
        return [LedgerRecord.from_fields(f) for _, f in await redis.xrevrange(STREAM, count=count)]
    finally:
        await redis.aclose()


def whole(streams: list[LongStream], via: str | None = None) -> None:
    """Every stream arrived whole (and through `via`, when given)."""
    for s in streams:
        s.result()
    assert all(s.complete for s in streams), [s.outcome for s in streams]
    if via is not None:
        assert all(s.outcome.provider == via for s in streams), [s.outcome.provider for s in streams]


def moved(
    load: Load,
    model: str,
    provider: str,
    after: float,
    slack_s: float = 0.1,
    share: float = 1.0,
    strays: int = 0,
) -> None:
    """Every load request of `model` started after `after` (+ slack) was served by `provider`, but
    `strays` of them, or at least `share` of them (a latency policy may still explore another now
    and then; a canary's other side keeps its 0.1 %)."""
    served = load.served(model, after + slack_s)
    total = sum(served.values())
    stray = [(f"r{o.replica}", o.sdk, "stream" if o.stream else "json", o.provider, round(o.started - after, 3))
             for o in load.snapshot() if o.model == model and o.started > after + slack_s and o.provider != provider]  # fmt: skip
    assert served[provider] >= min(share * total, total - strays), (model, provider, served, stray[:10])


def has_cluster(r: Replica, provider: str) -> bool:
    """Envoy on `r` has a cluster of `provider` (its own, its direct or try lane's) from xDS. Asks
    for just those (the whole dump is too big to poll quickly)."""
    names = "|".join(re.escape(f(provider)) for f in (cluster_name, direct_cluster_name, try_cluster_name))
    q = {"resource": "dynamic_active_clusters", "name_regex": f"^({names})$"}
    got = httpx.get(r.admin_url + "/config_dump", params=q, timeout=10).json()
    return bool(got.get("configs"))

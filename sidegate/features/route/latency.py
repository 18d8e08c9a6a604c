"""Latency stats for the `latency` routing policy: each provider's time to first token and error
rate, per model, as EWMAs every gateway replica shares through the store.

Why EWMAs per process, shared in the background: the choice is made on the request path, where
no store command may run. So each process keeps its own EWMAs (fed by its completion hooks, off
the request path) and every `SYNC_S` one pipeline writes them to the store and reads every other
replica's:

    hash  sg:lat:<model>   field <replica id>   value {"at": <unix s>, "p": {<provider>: [ttft_ms, err, n, ok, last]}}

(`ttft_ms`/`err`: the EWMAs; `n`: samples, `ok`: successful ones, `last`: unix time of the newest
sample). The hash expires `KEY_TTL_MS` after its last write; a replica's field older than
`FORGET_S` is deleted by whoever reads it. A provider's view combines the fresh entries (newest
sample within `STALE_S`) of every replica, this one's live, each weighted by its sample count
(capped at `WEIGHT_CAP`, so one busy replica's long history does not drown the others').

What is measured: time to first token of a streamed try (its first client-visible chunk); for a
non-streamed one the time to its answer (the full lane's end of answer, the direct lane's first
upstream byte). Failed tries (429, 5xx, timeouts, resets) feed the error EWMA; a 4xx about the
request says nothing about the provider and is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

from sidegate import metrics
from sidegate.core.completion import Completion
from sidegate.features.route.breaker import FAILURE_STATUSES
from sidegate.ids import UniqueIds
from sidegate.tasks import cancel_and_wait

log = logging.getLogger(__name__)

KEY_PREFIX = "sg:lat:"
ALPHA = 0.3
"""Weight of a new time-to-first-token sample (a slowed provider shows within a few requests)."""
ERR_ALPHA = 0.2
"""Weight of a new error sample (1 failed, 0 succeeded)."""
ERROR_PENALTY = 4.0
"""score = ttft_ewma_ms * (1 + ERROR_PENALTY * err_ewma): a provider failing half its tries must be
3 times faster to be preferred (a failed try costs its time and a fallback)."""
STALE_S = 30.0
"""Samples older than this no longer describe the provider: it counts as unmeasured (explored again)."""
EXPLORE_S = 2.0
"""An unmeasured provider gets at most one exploring request per this long per process, while a
measured healthy one exists (none measured: the unmeasured ones take turns)."""
SYNC_S = 0.5
WEIGHT_CAP = 20
KEY_TTL_MS = 120_000
FORGET_S = 300.0


@dataclass(slots=True)
class Ewma:
    """One provider's stats for one model, in one process."""

    ttft_ms: float = 0.0
    err: float = 0.0
    n: int = 0
    ok: int = 0
    last: float = 0.0
    """time.time() of the newest sample (wall clock: replicas compare it)."""

    def add(self, now: float, ttft_ms: float | None) -> None:
        """One sample: `ttft_ms` of a successful try, None for a failed one. Stale stats start over
        (a provider probed after a quiet spell is judged by what it does now)."""
        if now - self.last > STALE_S:
            self.ttft_ms, self.err, self.n, self.ok = 0.0, 0.0, 0, 0
        failed = 1.0 if ttft_ms is None else 0.0
        self.err = failed if self.n == 0 else self.err + ERR_ALPHA * (failed - self.err)
        if ttft_ms is not None:
            self.ttft_ms = ttft_ms if self.ok == 0 else self.ttft_ms + ALPHA * (ttft_ms - self.ttft_ms)
            self.ok += 1
        self.n += 1
        self.last = now

    def wire(self) -> list[float]:
        return [round(self.ttft_ms, 3), round(self.err, 4), self.n, self.ok, round(self.last, 3)]


@dataclass(slots=True)
class Others:
    """The other replicas' fresh entries for one provider, pre-summed at the last sync."""

    ttft_w: float = 0.0
    """sum of weight * ttft over entries with successful samples."""
    ok_w: float = 0.0
    err_w: float = 0.0
    """sum of weight * err."""
    w: float = 0.0
    last: float = 0.0


def score(ttft_ms: float, err: float) -> float:
    return ttft_ms * (1 + ERROR_PENALTY * err)


def combine(entries: list[list[float]], now: float) -> Others:
    """Several replicas' `[ttft_ms, err, n, ok, last]` entries -> their weighted sums (stale ones skipped)."""
    out = Others()
    for ttft_ms, err, n, ok, last in entries:
        if now - last > STALE_S or n <= 0:
            continue
        w = min(n, WEIGHT_CAP)
        out.err_w += w * err
        out.w += w
        if ok > 0:
            ok_weight = min(ok, WEIGHT_CAP)
            out.ttft_w += ok_weight * ttft_ms
            out.ok_w += ok_weight
        out.last = max(out.last, last)
    return out


class LatencyBoard:
    """This process's EWMAs, the other replicas' (as of the last sync), and the scores combining them."""

    def __init__(self, redis: Any = None, clock: Any = time.time):
        self.redis = redis
        """redis-py client (`Store.redis`), used only by the background sync; None: this process's view alone."""
        self.clock = clock
        self.replica = UniqueIds("r")()
        self.own: dict[str, dict[str, Ewma]] = {}
        self.others: dict[str, dict[str, Others]] = {}
        self.models: set[str] = set()
        """Models routed by latency here: their stats are read from the store."""
        self.explored: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    # -- recording (completion hooks: in memory only) -----------------------------------------
    def observe(self, c: Completion) -> None:
        """A finished try of a request routed by latency (its metadata says so)."""
        if c.meta.get("policy") != "latency" or c.attempt == 0:
            return
        status = 0 if c.aborted and not c.status else c.status
        if 200 <= status < 300:
            if c.aborted and not (c.streamed and c.chunks > 0):
                return  # the client left before the first token: nothing was measured
            sample: float | None = max(c.first_byte_at - c.started_at, 0.0) * 1000
        elif status == 0 or status in FAILURE_STATUSES:
            sample = None
        else:
            return
        model = str(c.meta.get("model", ""))
        stats = self.own.setdefault(model, {})
        ewma = stats.get(c.provider)
        if ewma is None:
            ewma = stats[c.provider] = Ewma()
        ewma.add(self.clock(), sample)
        self.models.add(model)

    # -- the view (request path: arithmetic only) ---------------------------------------------
    def score(self, model: str, provider: str) -> float | None:
        """ttft * (1 + 4 * err) over every replica's fresh stats; None: unmeasured (no fresh sample);
        inf: only failures."""
        now = self.clock()
        o = self.others.get(model, {}).get(provider)
        ttft_w, ok_w, err_w, w = (
            (o.ttft_w, o.ok_w, o.err_w, o.w) if o is not None and now - o.last <= STALE_S else (0, 0, 0, 0)
        )
        e = self.own.get(model, {}).get(provider)
        if e is not None and e.n > 0 and now - e.last <= STALE_S:
            own_w = min(e.n, WEIGHT_CAP)
            err_w, w = err_w + own_w * e.err, w + own_w
            if e.ok > 0:
                ok_weight = min(e.ok, WEIGHT_CAP)
                ttft_w, ok_w = ttft_w + ok_weight * e.ttft_ms, ok_w + ok_weight
        if w <= 0:
            return None
        if ok_w <= 0:
            return math.inf
        return score(ttft_w / ok_w, err_w / w)

    def want(self, model: str) -> None:
        """`model` is routed by latency here: keep its stats from the store (the first sync after)."""
        if model not in self.models:
            self.models.add(model)

    def may_explore(self, model: str, provider: str, now: float) -> bool:
        return now - self.explored.get((model, provider), -math.inf) >= EXPLORE_S

    def explore(self, model: str, provider: str, now: float) -> None:
        self.explored[(model, provider)] = now

    def last_explored(self, model: str, provider: str) -> float:
        return self.explored.get((model, provider), -math.inf)

    # -- sharing through the store (background) -----------------------------------------------
    async def sync(self) -> None:
        """Write this replica's stats, read every replica's (one pipeline)."""
        if self.redis is None or not self.models:
            return
        now = self.clock()
        models = sorted(self.models)
        pipe = self.redis.pipeline(transaction=False)
        for model in models:
            key = KEY_PREFIX + model
            mine = {
                p: e.wire()
                for p, e in self.own.get(model, {}).items()
                if e.n > 0 and now - e.last <= FORGET_S
            }
            if mine:
                pipe.hset(key, self.replica, orjson.dumps({"at": round(now, 3), "p": mine}))
                pipe.pexpire(key, KEY_TTL_MS)
            pipe.hgetall(key)
        results = await pipe.execute()
        # each model's HGETALL is the last result of its commands: walk them back per model
        found: list[dict[bytes, bytes]] = [r for r in results if isinstance(r, dict)]
        forget = self.redis.pipeline(transaction=False) if found else None
        stale = 0
        for model, fields in zip(models, found, strict=True):
            per: dict[str, list[list[float]]] = {}
            for field, raw in fields.items():
                if field.decode() == self.replica:
                    continue
                try:
                    entry = orjson.loads(raw)
                    if now - float(entry["at"]) > FORGET_S:
                        assert forget is not None
                        forget.hdel(KEY_PREFIX + model, field)
                        stale += 1
                        continue
                    if now - float(entry["at"]) > STALE_S:
                        continue
                    for provider, values in entry["p"].items():
                        per.setdefault(provider, []).append([float(v) for v in values[:5]])
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # another version's or a broken entry: not ours to judge
            self.others[model] = {p: combine(entries, now) for p, entries in per.items()}
        if stale and forget is not None:
            await forget.execute()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                await self.sync()
                self._warned = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # store down: route on this replica's own stats meanwhile
                metrics.store_error("extproc", "latency")
                if not self._warned:
                    log.warning(
                        "latency stats not shared (%s): routing on this replica's own", type(exc).__name__
                    )
                    self._warned = True

    async def start(self) -> None:
        if self.redis is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

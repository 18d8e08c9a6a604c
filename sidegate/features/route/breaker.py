"""Provider breaker: eject a provider that keeps failing from the start of a model's chain.

Why not only Envoy's outlier detection: each provider is a one-host cluster in a priority_group,
and when that host is ejected Envoy either routes to it anyway (panic threshold) or answers
"no healthy upstream" without retrying the next group. So the gateway keeps the health view
(fed by every try's outcome, honouring `retry-after`) and picks the route that starts the chain
at the first provider not ejected; Envoy still does every retry itself.

State is per extproc process (cheap, no I/O on the request path) and per (model, provider) route
(providers limit per model); each replica learns ejections from its own traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sidegate.config import BreakerConfig, ModelConfig, RouteConfig

FAILURE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


@dataclass(slots=True)
class _State:
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


class Breaker:
    def __init__(self, clock=time.monotonic):  # type: ignore[no-untyped-def]
        self.clock = clock
        self._state: dict[str, _State] = {}

    def record(
        self, provider: str, status: int, cfg: BreakerConfig, retry_after_s: float | None = None, model: str = ""
    ) -> None:
        """One try's outcome. status 0 = no response (timeout, reset, client gone)."""
        st = self._state.setdefault(f"{model}/{provider}", _State())
        if 200 <= status < 300:
            st.failures = 0
            st.ejections = 0
            return
        if status != 0 and status not in FAILURE_STATUSES:
            return  # a 4xx about the request says nothing about the provider's health
        now = self.clock()
        st.failures += 1
        if cfg.honour_retry_after and retry_after_s and status in (429, 503, 529):
            st.ejected_until = max(st.ejected_until, now + min(retry_after_s, cfg.max_ejection_s))
            st.failures = 0
            return
        if st.failures >= cfg.failures:
            st.ejected_until = now + min(cfg.ejection_s * (2**st.ejections), cfg.max_ejection_s)
            st.ejections += 1
            st.failures = 0

    def ejected(self, provider: str, model: str = "") -> bool:
        st = self._state.get(f"{model}/{provider}")
        return st is not None and st.ejected_until > self.clock()

    def start_index(self, m: ModelConfig, model: str = "") -> int:
        """First priority group with a provider that is not ejected (0 if all are: try anyway)."""
        return self.first_healthy(m.groups(), model)

    def first_healthy(self, groups: list[list[RouteConfig]], model: str = "") -> int:
        if not self._state:  # nothing ever failed here: the common case, no lookups
            return 0
        for i, group in enumerate(groups):
            if any(not self.ejected(r.provider, model) for r in group):
                return i
        return 0

    def snapshot(self) -> dict[str, float]:
        now = self.clock()
        return {p: round(st.ejected_until - now, 3) for p, st in self._state.items() if st.ejected_until > now}

"""ledger: one usage record per completed request (the final try, whichever lane), written to the
store's stream by a background task (:class:`sidegate.features.ledger.ledger.Ledger`)."""

from __future__ import annotations

from sidegate.config import SidegateConfig
from sidegate.core.feature import Feature
from sidegate.core.pricing import Pricing
from sidegate.features.ledger.ledger import Ledger
from sidegate.store import Store


class LedgerFeature(Feature):
    name = "ledger"

    def __init__(self, ledger: Ledger, cfg: SidegateConfig):
        self.ledger = ledger
        self.on_complete = ledger.completion_hook(cost=Pricing(cfg.quota.prices))  # type: ignore[method-assign]

    @classmethod
    def from_config(cls, cfg: SidegateConfig, store: Store | None = None) -> LedgerFeature | None:
        if store is None or not cfg.observability.ledger:
            return None
        return cls(Ledger(store, maxlen=cfg.observability.ledger_maxlen), cfg)

    async def start(self) -> None:
        self.ledger.start()

    async def close(self) -> None:
        await self.ledger.stop()

"""ledger: one usage record per completed request (the final try, whichever lane), written to the
store's stream by a background task (:class:`sidegate.features.ledger.ledger.Ledger`)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from sidegate.config import SidegateConfig
from sidegate.core.feature import Feature
from sidegate.core.pricing import Pricing
from sidegate.features.ledger.ledger import STREAM, Ledger
from sidegate.features.ledger.spill import Spill
from sidegate.store import Store


class LedgerFeature(Feature):
    name = "ledger"

    def __init__(self, ledger: Ledger, cfg: SidegateConfig):
        self.ledger = ledger
        self.pricing = Pricing(cfg.quota.prices)
        self.on_complete = ledger.completion_hook(cost=self.pricing)  # type: ignore[method-assign]

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A routing change: records are priced from the latest price table (the completion hook
        the app collected holds this Pricing: its table is swapped, one assignment)."""
        self.pricing.prices = cfg.quota.prices

    @classmethod
    def from_config(cls, cfg: SidegateConfig, store: Store | None = None) -> LedgerFeature | None:
        if store is None or not cfg.observability.ledger:
            return None
        obs = cfg.observability
        spill = obs.ledger_spill
        return cls(
            Ledger(
                store,
                # With an archive the archiver trims (only what it archived and every consumer group
                # acknowledged); MAXLEN would trim records nobody archived or shipped yet.
                maxlen=None if obs.ledger_archive.url else obs.ledger_maxlen,
                spill=Spill(spill_dir(cfg), spill.max_bytes) if spill.max_bytes else None,
                overflow=spill.overflow,
            ),
            cfg,
        )

    async def start(self) -> None:
        self.ledger.start()

    async def close(self) -> None:
        await self.ledger.stop()


def spill_dir(cfg: SidegateConfig) -> Path:
    """The configured spill directory, else one per store under the temporary directory: a spill
    belongs to the store it waits for (another gateway on this host must not replay it into its own)."""
    if cfg.observability.ledger_spill.dir:
        return Path(cfg.observability.ledger_spill.dir)
    url = urlsplit(cfg.store.url or "embedded")
    if url.scheme == "redis+cluster":  # several host:port seeds, which `url.port` cannot read
        where = f"{url.scheme}://{url.netloc.rpartition('@')[2]}"
    else:
        where = (
            f"{url.scheme}://{url.hostname}:{url.port}{url.path}" if url.hostname else url.geturl()
        )  # no password
    store = hashlib.sha256(f"{where} {STREAM}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sidegate-ledger-spill-{os.getuid()}" / store

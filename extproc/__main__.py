"""`python -m extproc -c CONFIG`: the ext_proc service (the gateway and the per-try stage)."""

from __future__ import annotations

import logging
import os

from extproc.main import serve
from sidegate.config import SidegateConfig
from sidegate.process import command_line, internal_token, quiet_gc, store_url, until_signal
from sidegate.store import open_store

log = logging.getLogger("sidegate")


async def main(cfg: SidegateConfig) -> None:
    token = internal_token(cfg)
    store = open_store(store_url(cfg), cfg.store.socket_timeout_s)
    server, service = await serve(cfg, store, cfg.services.host, cfg.services.extproc_port, token)
    quiet_gc()
    log.info("extproc listening on %s:%d", cfg.services.host, cfg.services.extproc_port)
    profile_to = os.environ.get("SIDEGATE_EXTPROC_PROFILE")
    if profile_to:  # a profiling run (docs/performance.md): cProfile until the stop signal
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        await until_signal()
        profiler.disable()
        profiler.dump_stats(f"{profile_to}.{os.getpid()}")
    else:
        await until_signal()
    await service.stop_serving(server, float(os.environ.get("SIDEGATE_DRAIN_S", "30")))
    await service.aclose()
    await store.aclose()


if __name__ == "__main__":
    command_line("extproc", main)

"""`python -m extproc -c CONFIG`: the ext_proc service (the gateway and the per-try stage)."""

from __future__ import annotations

import logging
import os

from extproc.main import serve
from sidegate.config import SidegateConfig
from sidegate.process import command_line, internal_token, quiet_gc, store_url, until_signal
from sidegate.store.lean import FastRedis
from sidegate.store.valkey import client

log = logging.getLogger("sidegate")


async def main(cfg: SidegateConfig) -> None:
    token = internal_token(cfg)
    redis = client(store_url(cfg), cfg.store.socket_timeout_s)
    hot = FastRedis.from_url(store_url(cfg), cfg.store.socket_timeout_s)  # the per-request scripts
    server, service = await serve(cfg, redis, cfg.services.host, cfg.services.extproc_port, token, hot)
    quiet_gc()
    log.info("extproc listening on %s:%d", cfg.services.host, cfg.services.extproc_port)
    await until_signal()
    await service.stop_serving(server, float(os.environ.get("SIDEGATE_DRAIN_S", "30")))
    await service.aclose()
    await redis.aclose()
    if hot is not None:
        await hot.aclose()


if __name__ == "__main__":
    command_line("extproc", main)

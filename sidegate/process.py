"""What every long-running service process shares: the event loop, the store URL, the internal
token, signals, and the collector settings after start-up (authz/__main__.py, extproc/__main__.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from sidegate.config import SidegateConfig
from sidegate.trust import MissingToken, Token, load_token

log = logging.getLogger("sidegate")


def _loop_policy() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass


def store_url(cfg: SidegateConfig) -> str:
    url = os.environ.get("SIDEGATE_REDIS_URL") or cfg.store.url
    if not url:
        raise SystemExit("no store: set store.url or SIDEGATE_REDIS_URL (`sidegate up` starts an embedded Valkey)")
    return url


def internal_token(cfg: SidegateConfig) -> Token:
    """The secret Envoy presents on every call; without one the service does not start (its ports
    would hand provider keys and tenant identities to any local process)."""
    try:
        return Token(load_token(cfg))
    except MissingToken as exc:
        raise SystemExit(str(exc)) from None


async def until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def quiet_gc() -> None:
    """After start-up (tokenizer, embedding model, config loaded): move every live object out of the
    collector's reach and collect the young generation less often. Full collections otherwise scan
    the model's objects every few thousand requests and show up as multi-millisecond p99 stalls."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def run(service: str, main: Callable[[SidegateConfig], Awaitable[None]], cfg: SidegateConfig) -> None:
    """Run one service's main coroutine on uvloop until SIGTERM/SIGINT."""
    logging.basicConfig(level=os.environ.get("SIDEGATE_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _loop_policy()
    profile = os.environ.get("SIDEGATE_PROFILE")  # developer aid: cProfile this process into a file
    if profile:
        import cProfile

        with cProfile.Profile() as prof:
            asyncio.run(main(cfg))
        prof.dump_stats(f"{profile}.{service}.{os.getpid()}")
        return
    asyncio.run(main(cfg))


def command_line(service: str, main: Callable[[SidegateConfig], Awaitable[None]], argv: list[str] | None = None) -> None:
    """`python -m authz|extproc -c CONFIG` (what `sidegate serve authz|extproc` runs)."""
    import argparse

    from sidegate.config import load_or_exit

    ap = argparse.ArgumentParser(prog=f"python -m {service}")
    ap.add_argument("-c", "--config", required=True)
    args = ap.parse_args(argv)
    run(service, main, load_or_exit(args.config))

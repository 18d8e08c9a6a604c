"""`sidegate ledger ...`: the ledger's long-running jobs. `ledger ship` copies the ledger into
ClickHouse (until caught up, or `--follow`); `ledger run` is the process `sidegate up` supervises:
every configured job (shipping; archiving) side by side, with its own /metrics.

A job is a coroutine taking the stop event (:func:`ledger_jobs`); add one there and to
:func:`runner_wanted` and `ledger run` runs it and `sidegate up` starts the runner for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from sidegate import config as config_mod
from sidegate.config import SidegateConfig
from sidegate.features.ledger import cli as ledger_cli
from sidegate.features.ledger import ledger
from sidegate.features.ledger.archive import archive_forever
from sidegate.features.ledger.clickhouse import open_sink
from sidegate.features.ledger.ship import Shipper
from sidegate.store.redispy import client

log = logging.getLogger("sidegate.ledger")

Job = Callable[[asyncio.Event], Awaitable[object]]


def runner_wanted(cfg: SidegateConfig) -> bool:
    """Whether `sidegate up` starts `sidegate ledger run` (something for it to do is configured)."""
    return bool(cfg.observability.ledger_ship.url or cfg.observability.ledger_archive.url)


def ledger_jobs(
    cfg: SidegateConfig, redis: Redis, *, stream: str = ledger.STREAM, create_tables: bool = False
) -> list[Job]:
    """The configured ledger jobs, each run until the stop event is set."""
    jobs: list[Job] = []
    if cfg.observability.ledger_ship.url:
        jobs.append(lambda stop: ship(cfg, redis, stop, stream=stream, create_tables=create_tables))
    if cfg.observability.ledger_archive.url:
        jobs.append(lambda stop: archive_forever(redis, cfg.observability.ledger_archive, stream=stream, stop=stop))
    return jobs


async def ship(
    cfg: SidegateConfig, redis: Redis, stop: asyncio.Event, *, follow: bool = True, stream: str = ledger.STREAM,
    create_tables: bool = False,
) -> int:  # fmt: skip
    """Run the ClickHouse shipper (``follow``: until stopped; else until caught up)."""
    ship_cfg = cfg.observability.ledger_ship
    sink = open_sink(ship_cfg)
    shipper = Shipper(redis, sink, ship_cfg, stream=stream)
    try:
        if not await shipper.connect(stop, create_tables or ship_cfg.create_tables):
            return 0
        log.info("ledger shipper: %s -> %s (%s.%s), group %r as %r", stream, sink.name, ship_cfg.database,
                 ship_cfg.table, shipper.group, shipper.consumer)  # fmt: skip
        return await shipper.run(stop, follow=follow)
    finally:
        await sink.close()
        log.info("ledger shipper: %d records in %d batches this run", shipper.shipped, shipper.batches)


async def run_jobs(jobs: list[Job], stop: asyncio.Event) -> int:
    """Run the jobs until ``stop`` is set or one of them fails; then stop the others. Exit status 1
    when one failed, so `sidegate up` restarts the runner (with back-off) instead of it idling."""
    tasks = [asyncio.create_task(job(stop)) for job in jobs]
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait(
        [*tasks, stopped], return_when=asyncio.FIRST_EXCEPTION if tasks else asyncio.FIRST_COMPLETED
    )
    stop.set()
    await stopped
    failed = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, BaseException)]
    for exc in failed:
        log.error("ledger job failed: %s", "".join(traceback.format_exception(exc)).rstrip())
    return 1 if failed else 0


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _config(args: argparse.Namespace) -> SidegateConfig:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return config_mod.load_or_exit(args.config)


def cmd_ship(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not cfg.observability.ledger_ship.url:
        print("observability.ledger_ship.url is not set: nowhere to ship to", file=sys.stderr)
        return 2

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        redis = client(ledger_cli._redis_url(args), socket_timeout_s=10.0)
        try:
            n = await ship(
                cfg, redis, stop, follow=args.follow, stream=args.stream, create_tables=args.create_tables
            )
        finally:
            await redis.aclose()
        print(f"shipped {n} records", file=sys.stderr)
        return 0

    return asyncio.run(main())


def cmd_run(args: argparse.Namespace) -> int:
    from sidegate.metrics_server import start_metrics_server

    cfg = _config(args)

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        redis = client(ledger_cli._redis_url(args), socket_timeout_s=10.0)
        jobs = ledger_jobs(cfg, redis, stream=args.stream, create_tables=args.create_tables)
        if not jobs:
            log.warning(
                "ledger run: nothing configured (observability.ledger_ship.url, ledger_archive.url); serving metrics only"
            )
        # --metrics-port (what `sidegate up` passes; 0 picks a free one), else the config's (0: none)
        port = cfg.observability.ledger_metrics_port if args.metrics_port is None else args.metrics_port
        serve = args.metrics_port is not None or port != 0
        server = start_metrics_server(port, cfg.services.metrics_host) if serve else None
        try:
            return await run_jobs(jobs, stop)
        finally:
            await redis.aclose()
            if server is not None:
                server.close()

    return asyncio.run(main())


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "ledger", help="the usage ledger's jobs: ship it into ClickHouse, `run` them all"
    )
    sp = p.add_subparsers(dest="ledger_cmd", required=True)
    s = sp.add_parser(
        "ship", help="copy the ledger into ClickHouse (observability.ledger_ship), until caught up"
    )
    s.add_argument("--follow", action="store_true", help="keep shipping new records until stopped")
    r = sp.add_parser("run", help="run every configured ledger job until stopped (what `sidegate up` starts)")
    r.add_argument(
        "--metrics-port", type=int, help="/metrics port (default: observability.ledger_metrics_port)"
    )
    for q in (s, r):
        q.add_argument("-c", "--config", required=True, help="Sidegate config")
        q.add_argument("--redis-url", help="store URL (default: $SIDEGATE_REDIS_URL, then the config)")
        q.add_argument("--stream", default=ledger.STREAM, help=argparse.SUPPRESS)
        q.add_argument(
            "--create-tables", action="store_true", help="create the ClickHouse tables and view if missing"
        )
    s.set_defaults(func=cmd_ship)
    r.set_defaults(func=cmd_run)

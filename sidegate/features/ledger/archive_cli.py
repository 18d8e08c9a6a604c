"""`sidegate ledger archive`: one archive pass (or ``--forever``: a pass every ``interval_s``).

The ``ledger`` command group is shared with the shipper's commands: :func:`ledger_commands` finds it
or makes it, so either side can add its commands first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from sidegate.features.ledger import archive
from sidegate.features.ledger.ledger import STREAM


def ledger_commands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """The subcommands of `sidegate ledger` (the group is created on first use)."""
    group = subparsers.choices.get("ledger")
    if group is None:
        group = subparsers.add_parser("ledger", help="the usage ledger's shipping and archive")
        group.add_subparsers(dest="ledger_cmd", required=True)
    return next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = ledger_commands(subparsers).add_parser(
        "archive", help="write ledger records older than older_than to object storage, then trim them"
    )
    p.add_argument(
        "-c", "--config", required=True, help="Sidegate config (observability.ledger_archive, store.url)"
    )
    p.add_argument("--redis-url", help="store URL (default: $SIDEGATE_REDIS_URL, then the config)")
    p.add_argument("--forever", action="store_true", help="a pass every interval_s until interrupted")
    p.add_argument("--stream", default=STREAM, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_archive)


def cmd_archive(args: argparse.Namespace) -> int:
    from sidegate import config as config_mod
    from sidegate.features.ledger.cli import _redis_url
    from sidegate.store.redispy import client

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = config_mod.load(args.config).observability.ledger_archive
    if not cfg.url:
        print(
            f"{args.config}: observability.ledger_archive.url is not set: nothing to archive to",
            file=sys.stderr,
        )
        return 2

    async def main() -> int:
        redis = client(_redis_url(args), socket_timeout_s=10.0)
        try:
            if args.forever:
                await archive.archive_forever(redis, cfg, stream=args.stream)
                return 0
            res = await archive.archive_once(redis, cfg, stream=args.stream)
        finally:
            await redis.aclose()
        print(
            f"archived {res.records} records in {len(res.objects)} objects (up to {res.watermark}); "
            f"trimmed {res.trimmed}; kept {res.kept_for_groups} a consumer group has not acknowledged"
        )
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:  # --forever stopped by Ctrl-C: a pass cut short repeats next time
        return 0
    except archive.ArchiveError as exc:
        print(f"ledger archive: {exc}", file=sys.stderr)
        return 2

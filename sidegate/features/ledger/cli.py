"""`sidegate usage` (summary of the usage ledger per model, or per tenant/team/user with ``--by``) and
`sidegate usage export` (JSON lines).

Wire into the CLI with ``ledger_cli.add_commands(sub)`` where ``sub`` is the top-level subparsers.
The store is found from ``--redis-url``, else ``SIDEGATE_REDIS_URL``, else ``store.url`` of ``-c``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import orjson
from redis.asyncio import Redis

from sidegate.features.ledger import ledger, reading
from sidegate.store.redispy import client

_GROUPS = ("tenant", "team", "user")

AuditExport = Callable[[Redis, TextIO, str | None, str | None], Awaitable[int]]
"""Writes the admin audit log's entries as JSON lines (redis, out, since, group) -> how many. The
CLI's assembly passes it in: the ledger cannot import the admin package that owns the audit log."""


def _store_args(p: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("-c", "--config", default=default, help="Sidegate config (for store.url)")
    p.add_argument(
        "--redis-url", default=default, help="store URL (default: $SIDEGATE_REDIS_URL, then the config)"
    )
    p.add_argument(
        "--stream", default=argparse.SUPPRESS if suppress else ledger.STREAM, help=argparse.SUPPRESS
    )


def add_commands(subparsers: argparse._SubParsersAction, audit_export: AuditExport | None = None) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("usage", help="usage ledger: per-model summary, or `export` as JSON lines")
    _store_args(p, suppress=False)
    p.add_argument("--tenant", help="only this tenant (default: all)")
    p.add_argument("--team", help="only this team (default: all; '' = requests of no team)")
    p.add_argument("--user", help="only this user (default: all; '' = requests of no user)")
    p.add_argument(
        "--by", type=_group_by, default=("model",),
        help=f"group by these, comma-separated, of {','.join(reading.GROUP_FIELDS)} (default: model)",
    )  # fmt: skip
    p.add_argument("--since", help="start: epoch s, ISO date/time, or a duration back from now (24h, 7d)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_usage)
    sp = p.add_subparsers(dest="usage_cmd")
    e = sp.add_parser("export", help="write ledger records as JSON lines (ClickHouse JSONEachRow-ready)")
    _store_args(e, suppress=True)
    e.add_argument("--since", default=argparse.SUPPRESS, help="start time (as for `usage --since`)")
    e.add_argument("-o", "--output", help="file to write (default: stdout); appended to")
    e.add_argument("--group", help="consumer group: export only records this group has not acknowledged yet")
    e.set_defaults(func=cmd_usage_export, audit_export=audit_export)
    if audit_export is not None:
        e.add_argument(
            "--with-audit",
            action="store_true",
            help='append the admin audit log\'s entries ("kind": "audit") since the same time (with --group: '
            "those that group has not exported yet)",
        )


def _group_by(text: str) -> tuple[str, ...]:
    fields = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in fields if f not in reading.GROUP_FIELDS]
    if bad or not fields:
        raise argparse.ArgumentTypeError(
            f"group by one or more of {','.join(reading.GROUP_FIELDS)}, not {text!r}"
        )
    return fields


def _redis_url(args: argparse.Namespace) -> str:
    url = getattr(args, "redis_url", None) or os.environ.get("SIDEGATE_REDIS_URL")
    if not url and getattr(args, "config", None):
        from sidegate import config as config_mod

        url = config_mod.load(args.config).store.url
    if not url:
        raise SystemExit("no store: pass --redis-url, set SIDEGATE_REDIS_URL, or -c a config with store.url")
    return url


def _run(args: argparse.Namespace, body: Callable[[Redis], Awaitable[int]]) -> int:
    async def main() -> int:
        redis = client(_redis_url(args), socket_timeout_s=10.0)
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def cmd_usage(args: argparse.Namespace) -> int:
    async def body(redis: Redis) -> int:
        rows = await reading.summarize(redis, args.tenant, args.since, stream=args.stream, by=args.by,
                                       team=args.team, user=args.user)  # fmt: skip
        print_summary(rows, sys.stdout, as_json=args.json, tenant=args.tenant, by=args.by)
        return 0

    return _run(args, body)


def cmd_usage_export(args: argparse.Namespace) -> int:
    async def body(redis: Redis) -> int:
        since = getattr(args, "since", None)
        audit = args.audit_export if getattr(args, "with_audit", False) else None

        async def export(out: TextIO) -> str:
            n = await reading.export_jsonl(redis, out, since, args.group, stream=args.stream)
            if audit is None:
                return f"{n} records"
            return f"{n} records and {await audit(redis, out, since, args.group)} audit entries"

        if args.output:
            with Path(args.output).open("a", encoding="utf-8") as out:
                done = await export(out)
        else:
            done = await export(sys.stdout)
        print(f"exported {done}", file=sys.stderr)
        return 0

    return _run(args, body)


def print_summary(
    rows: list[reading.UsageSummary], out: TextIO, *, as_json: bool = False, tenant: str | None = None,
    by: tuple[str, ...] = ("model",),
) -> None:  # fmt: skip
    if as_json:  # the grouping fields not grouped by are left out
        dicts = [{k: v for k, v in asdict(r).items() if k not in _GROUPS or k in by} for r in rows]
        out.write(orjson.dumps(dicts, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    who = f"tenant {tenant}" if tenant else "all tenants"
    if not rows:
        out.write(f"no usage recorded for {who}\n")
        return
    head = (*by, "requests", "errors", "in tokens", "out tokens", "cached", "cost USD", "cache hits",
            "fallbacks", "p50 ms", "p95 ms")  # fmt: skip
    table = [
        (*(getattr(r, f) or "-" for f in by), r.requests, r.errors, r.input_tokens, r.output_tokens,
         r.cached_tokens, f"{r.cost_usd:.4f}", r.cache_hits, r.fallbacks, f"{r.latency_p50_ms:.0f}",
         f"{r.latency_p95_ms:.0f}")
        for r in rows
    ]  # fmt: skip
    total = ("TOTAL", *("" for _ in by[1:]), sum(r.requests for r in rows), sum(r.errors for r in rows),
             sum(r.input_tokens for r in rows),
             sum(r.output_tokens for r in rows), sum(r.cached_tokens for r in rows),
             f"{sum(r.cost_usd for r in rows):.4f}", sum(r.cache_hits for r in rows),
             sum(r.fallbacks for r in rows), "", "")  # fmt: skip
    cells = [tuple(str(c) for c in row) for row in (head, *table, total)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    out.write(f"Usage for {who}\n")
    for i, row in enumerate(cells):
        out.write(
            "  ".join(
                c.ljust(w) if j < len(by) else c.rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        out.write("\n")
        if i == 0 or i == len(cells) - 2:
            out.write("  ".join("-" * w for w in widths) + "\n")

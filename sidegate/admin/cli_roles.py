"""`sidegate admin tokens create|list|revoke` and `sidegate admin audit [export|trim]`.

Like the other control-plane commands they talk straight to the store and act as the owner
principal ``cli:<os user>`` from ``local`` (so their changes are audited as such). Wired in by
:func:`sidegate.admin.cli.add_commands`, which passes its own store and argument helpers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import orjson
from redis.asyncio import Redis

from sidegate.admin import audit, tokens
from sidegate.admin import controlplane as cp
from sidegate.admin.api_audit import audit_query, parse_time

Run = Callable[[argparse.Namespace, Callable[[cp.ControlPlane], Awaitable[int]]], int]
Common = Callable[..., argparse.ArgumentParser]


def _print_json(obj: Any) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"


def _tokens_create(run: Run) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        async def op(c: cp.ControlPlane) -> int:
            expires = time.time() + args.expires_in if args.expires_in is not None else args.expires_at
            token, info = await tokens.create(c, args.role, args.tenant, args.name, expires)
            record = info.to_dict(c.clock())
            if args.json:
                _print_json({"token": token, "record": record})
                return 0
            print(f"token:   {token}")
            print(f"id:      {info.id}")
            print(f"role:    {info.role.value}")
            print(f"tenant:  {info.tenant or '(every tenant)'}")
            print(f"expires: {_when(info.expires_at)}")
            print("The token is shown once: only its hash is stored.", file=sys.stderr)
            return 0

        return run(args, op)

    return cmd


def _tokens_list(run: Run) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        async def op(c: cp.ControlPlane) -> int:
            now = c.clock()
            infos = [i for i in await tokens.list_all(c) if args.tenant is None or i.tenant == args.tenant]
            if args.json:
                _print_json([i.to_dict(now) for i in infos])
                return 0
            print(f"{'ID':<9} {'ROLE':<13} {'TENANT':<20} {'STATUS':<8} {'EXPIRES':<20} NAME")
            for i in infos:
                print(f"{i.id:<9} {i.role.value:<13} {i.tenant or '*':<20} {i.status(now):<8} "
                      f"{_when(i.expires_at):<20} {i.name}")  # fmt: skip
            return 0

        return run(args, op)

    return cmd


def _tokens_revoke(run: Run) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        async def op(c: cp.ControlPlane) -> int:
            info = await tokens.revoke(c, args.id)
            if args.json:
                _print_json(info.to_dict(c.clock()))
            else:
                print(f"revoked admin token {info.id} ({info.name})")
            return 0

        return run(args, op)

    return cmd


def _audit_list(run: Run) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        params = {
            k: str(v) for k in ("tenant", "actor", "action", "limit") if (v := getattr(args, k)) is not None
        }

        async def op(c: cp.ControlPlane) -> int:
            for k in ("since", "until"):
                if getattr(args, k):
                    params[k] = repr(parse_time(getattr(args, k), k))
            q, limit = audit_query(params)
            entries, more = await audit.query(c.redis, q, limit)
            if args.json:
                _print_json({"entries": [e.to_dict() for e in entries], "more": more})
                return 0
            for e in entries:
                print(
                    f"{_when(e.ts)}  {e.action:<20} {e.target:<28} {e.actor} ({e.role}) from {e.source or '-'}"
                )
            if more:
                print("(more entries: narrow with --since/--until or raise --limit)", file=sys.stderr)
            return 0

        return run(args, op)

    return cmd


def _audit_export(run: Run) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        async def op(c: cp.ControlPlane) -> int:
            since = parse_time(args.since, "since") if args.since else None
            if args.output:
                with Path(args.output).open("a", encoding="utf-8") as out:
                    n = await audit.export_jsonl(c.redis, out, since, args.group)
            else:
                n = await audit.export_jsonl(c.redis, sys.stdout, since, args.group)
            print(f"exported {n} audit entries", file=sys.stderr)
            return 0

        return run(args, op)

    return cmd


def _audit_trim(run: Run) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        async def op(c: cp.ControlPlane) -> int:
            n = await audit.trim_before(c.redis, parse_time(args.before, "before"), c.principal, c.clock())
            print(f"deleted {n} audit entries older than {args.before}")
            return 0

        return run(args, op)

    return cmd


async def ledger_audit_export(redis: Redis, out: TextIO, since: str | None, group: str | None) -> int:
    """`sidegate usage export --with-audit`: the audit entries after the usage records, same format."""
    return await audit.export_jsonl(redis, out, parse_time(since, "since") if since else None, group)


def add_commands(admin_sub: Any, common: Common, run: Run, duration: Callable[[str], float]) -> None:
    """``tokens`` and ``audit`` under ``sidegate admin`` (``duration`` parses ``90d``-like lifetimes)."""
    pt = admin_sub.add_parser("tokens", help="admin API tokens (owner, tenant_admin, viewer)").add_subparsers(
        dest="tokens_cmd", required=True
    )
    p = common(pt.add_parser("create", help="create an admin token (shown once)"))
    p.add_argument("--role", required=True, choices=["owner", "tenant_admin", "viewer"])
    p.add_argument("--tenant", help="the tenant it is scoped to (required for tenant_admin)")
    p.add_argument("--name", required=True, help="a label: who or what holds it")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--expires-in", type=duration, help="lifetime, e.g. 90d (default: never expires)")
    g.add_argument("--expires-at", type=float, help="expiry as Unix time in seconds")
    p.set_defaults(func=_tokens_create(run))
    p = common(pt.add_parser("list", help="list admin tokens (never hashes or secrets)"))
    p.add_argument("--tenant")
    p.set_defaults(func=_tokens_list(run))
    p = common(pt.add_parser("revoke", help="revoke an admin token (refused from the next request on)"))
    p.add_argument("id")
    p.set_defaults(func=_tokens_revoke(run))

    pa = common(admin_sub.add_parser("audit", help="the audit log: every admin change, newest first"))
    pa.add_argument("--since", help="start: epoch s, ISO date/time, or a duration back from now (24h, 7d)")
    pa.add_argument("--until", help="end (as --since)")
    pa.add_argument("--tenant")
    pa.add_argument("--actor", help="e.g. env, token:<id>, oidc:<sub>, cli:<user>")
    pa.add_argument("--action", help="e.g. key.create, or a kind: key.")
    pa.add_argument("--limit", type=int, default=100)
    pa.set_defaults(func=_audit_list(run))
    sp = pa.add_subparsers(dest="audit_cmd")
    e = common(
        sp.add_parser("export", help="audit entries as JSON lines (the ledger export's format)"), False
    )
    e.add_argument("--since", help="start time (as for `audit --since`)")
    e.add_argument("-o", "--output", help="file to write (default: stdout); appended to")
    e.add_argument("--group", help="consumer group: export only entries this group has not acknowledged yet")
    e.set_defaults(func=_audit_export(run))
    t = common(sp.add_parser("trim", help="delete entries older than a time (archive them first)"), False)
    t.add_argument("--before", required=True, help="epoch s, ISO date/time, or a duration back (365d)")
    t.set_defaults(func=_audit_trim(run))

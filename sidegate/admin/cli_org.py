"""`sidegate teams list|show|set|delete` and `sidegate users ...`: a tenant's teams and users, their
limits and model allow-lists, straight in the store (as the other control-plane commands, whose
helpers it uses; wired into `sidegate` by sidegate/cli.py).

``set`` creates the team or user, or changes only what its flags name (limits, models, a user's team)
and keeps the rest: ``sidegate teams set acme ml --daily-usd 50 --model gpt-4o --model o3``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sidegate.admin import controlplane as cp
from sidegate.admin.cli import _common, _limit_args, _limits_from, _print_json, _run
from sidegate.keystore import TenantLimits

_KINDS = ("team", "user")


def _line(d: dict[str, Any], kind: str) -> str:
    lim = ", ".join(f"{k}={'-' if v is None else v}" for k, v in d["limits"].items())
    extra = f" team={d['team'] or '-'}" if kind == "user" else f" users={','.join(d['users']) or '-'}"
    return f"{d[kind]}:{extra} models={','.join(d['models'])} keys={d['active_keys']}; limits: {lim}"


def _show(info: cp.TeamInfo | cp.UserInfo, kind: str, as_json: bool) -> None:
    d = info.to_dict()
    if as_json:
        _print_json(d)
    else:
        print(_line(d, kind))


def cmd_list(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        infos: list[Any] = await (
            c.list_teams(args.tenant) if args.kind == "team" else c.list_users(args.tenant)
        )
        if args.json:
            _print_json([i.to_dict() for i in infos])
        for i in [] if args.json else infos:
            print(_line(i.to_dict(), args.kind))
        return 0

    return _run(args, op)


def cmd_show(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        get = c.get_team if args.kind == "team" else c.get_user
        _show(await get(args.tenant, args.name), args.kind, args.json)
        return 0

    return _run(args, op)


def cmd_set(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        try:
            current: cp.TeamInfo | cp.UserInfo | None = await (
                c.get_team(args.tenant, args.name)
                if args.kind == "team"
                else c.get_user(args.tenant, args.name)
            )
        except cp.NotFound:
            await c.get_tenant(args.tenant)  # an unknown tenant is the error to show
            current = None
        base = current.record.limits if current else TenantLimits()
        limits = _limits_from(args, base) or base
        models = args.model or (current.record.models if current else ["*"])
        if args.kind == "team":
            info, created = await c.put_team(args.tenant, args.name, limits, models)
        else:
            team = current.record.team if isinstance(current, cp.UserInfo) else ""
            team = "" if args.no_team else (args.team if args.team is not None else team)
            info, created = await c.put_user(args.tenant, args.name, team or None, limits, models)
        _show(info, args.kind, args.json)
        if created and not args.json:
            print(f"(created {args.kind} {args.name})", file=sys.stderr)
        return 0

    return _run(args, op)


def cmd_delete(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        delete = c.delete_team if args.kind == "team" else c.delete_user
        n = await delete(args.tenant, args.name)
        if n is None:
            print(f"error: no {args.kind} {args.name} in tenant {args.tenant}", file=sys.stderr)
            return 1
        print(f"deleted {args.kind} {args.name} of tenant {args.tenant}; revoked {n} key(s)")
        return 0

    return _run(args, op)


def add_commands(root: Any) -> None:
    """The ``teams`` and ``users`` groups."""
    for kind in _KINDS:
        sub = root.add_parser(f"{kind}s", help=f"a tenant's {kind}s: limits and model allow-lists")
        group = sub.add_subparsers(dest=f"{kind}s_cmd", required=True)
        p = _common(group.add_parser("list", help=f"list a tenant's {kind}s"))
        p.add_argument("tenant")
        p.set_defaults(func=cmd_list, kind=kind)
        p = _common(group.add_parser("show", help=f"one {kind}"))
        p.add_argument("tenant")
        p.add_argument("name")
        p.set_defaults(func=cmd_show, kind=kind)
        p = _common(group.add_parser("set", help=f"create a {kind}, or change what the flags name"))
        p.add_argument("tenant")
        p.add_argument("name")
        _limit_args(p)
        p.add_argument(
            "--model", action="append", help="allowed client model (repeat; replaces the list; '*' = all)"
        )
        if kind == "user":
            g = p.add_mutually_exclusive_group()
            g.add_argument("--team", help="the team of the tenant the user belongs to (its keys follow)")
            g.add_argument("--no-team", action="store_true", help="take the user out of its team")
        p.set_defaults(func=cmd_set, kind=kind)
        p = _common(group.add_parser("delete", help=f"delete a {kind} and revoke its keys"), json_flag=False)
        p.add_argument("tenant")
        p.add_argument("name")
        p.set_defaults(func=cmd_delete, kind=kind)

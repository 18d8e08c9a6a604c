"""`sidegate keys create|list|revoke|rotate`, `sidegate tenants ...`, `sidegate admin serve`
(`sidegate teams ...` and `sidegate users ...`: :mod:`sidegate.admin.cli_org`, built on these helpers).

The commands talk straight to the store: its URL comes from ``SIDEGATE_REDIS_URL`` or from the
``store.url`` of the config given with ``-c``. Wire into the main CLI with
``add_commands(root_subparsers, keys_subparsers)``; ``python -m sidegate.admin.cli`` runs them alone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from sidegate.admin import controlplane as cp
from sidegate.admin.principal import cli_principal
from sidegate.keystore import LIMIT_FIELDS, TenantLimits
from sidegate.store.layout import migrate_layout

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_NONE = ("none", "null", "unlimited", "-")
DEFAULT_ADMIN_PORT = 9003
P = TypeVar("P")  # the control plane a command runs on


def duration(text: str) -> float:
    """'90', '90s', '15m', '1h', '7d' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _limit(kind: type[int] | type[float]) -> Callable[[str], int | float | str]:
    def parse(text: str) -> int | float | str:
        if text.lower() in _NONE:
            return "none"
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None

    return parse


def store_url(args: argparse.Namespace) -> str:
    url = os.environ.get("SIDEGATE_REDIS_URL")
    if not url and getattr(args, "config", None):
        from sidegate import config

        try:
            url = config.load(args.config).store.url
        except config.ConfigError as exc:
            raise SystemExit(f"{exc.source}: invalid configuration: {'; '.join(exc.problems)}") from None
    if not url:
        raise SystemExit("no store URL: set SIDEGATE_REDIS_URL or pass -c CONFIG with store.url")
    return url


def _client(args: argparse.Namespace) -> Redis:
    from sidegate.store.redispy import client

    return client(store_url(args), socket_timeout_s=5.0)


def _run(args: argparse.Namespace, op: Callable[[cp.ControlPlane], Awaitable[int]]) -> int:
    return _run_on(args, lambda redis: cp.ControlPlane(redis, principal=cli_principal()), op)


def _run_on(args: argparse.Namespace, plane: Callable[[Redis], P], op: Callable[[P], Awaitable[int]]) -> int:
    """`op` on the plane `plane` makes over the store; the exit status (a refusal or an unreachable
    store: its reason on stderr, 1)."""

    async def main() -> int:
        redis = _client(args)
        try:
            await migrate_layout(redis)  # a store written before the config keys' {sg} tag
            return await op(plane(redis))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except cp.ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"error: store unreachable ({type(exc).__name__})", file=sys.stderr)
        return 1


def _print_json(obj: Any) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"


def _expiry(args: argparse.Namespace) -> float | None:
    if getattr(args, "expires_in", None) is not None:
        return time.time() + args.expires_in
    return getattr(args, "expires_at", None)


def _show_new_key(
    key: str, record: dict[str, Any], as_json: bool, extra: dict[str, Any] | None = None
) -> None:
    if as_json:
        _print_json({"key": key, "record": record, **(extra or {})})
        return
    print(f"key:     {key}")
    print(f"id:      {record['id']}")
    print(f"tenant:  {record['tenant']}")
    for field in ("team", "user"):
        if record.get(field):
            print(f"{field + ':':<8} {record[field]}")
    print(f"models:  {', '.join(record['models'])}")
    print(f"expires: {_when(record['expires_at'])}")
    print("The key is shown once: give it to the tenant now. Only its hash is stored.", file=sys.stderr)


# ---- keys ----


def cmd_keys_create(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        key, info = await c.create_key(args.tenant, args.model or ["*"], _expiry(args), team=args.team, user=args.user)
        _show_new_key(key, info.to_dict(), args.json)
        return 0

    return _run(args, op)


def cmd_keys_list(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        infos = await c.list_keys(args.tenant)
        if args.json:
            _print_json([i.to_dict() for i in infos])
            return 0
        print(f"{'ID':<9} {'TENANT':<20} {'STATUS':<8} {'EXPIRES':<20} MODELS")
        for i in infos:
            print(f"{i.id:<9} {i.tenant:<20} {i.status():<8} {_when(i.expires_at):<20} {','.join(i.models)}")
        return 0

    return _run(args, op)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        info = await c.revoke_key(args.id)
        if args.json:
            _print_json(info.to_dict())
        else:
            print(f"revoked {info.id} (tenant {info.tenant})")
        return 0

    return _run(args, op)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        rot = await c.rotate_key(args.id, args.overlap, _expiry(args))
        _show_new_key(rot.key, rot.new.to_dict(), args.json, {"previous": rot.old.to_dict()})
        if not args.json:
            print(f"old key {rot.old.id} stays valid until {_when(rot.old.expires_at)}")
        return 0

    return _run(args, op)


# ---- tenants ----


def _limits_from(args: argparse.Namespace, base: TenantLimits) -> TenantLimits | None:
    """Merge the given --rpm/... flags over ``base``; None when no flag was given."""
    given = {f: getattr(args, f) for f in LIMIT_FIELDS if getattr(args, f) is not None}
    if not given:
        return None
    merged = base.to_dict() | {f: (None if v == "none" else v) for f, v in given.items()}
    return cp.check_limits(merged)


def _show_tenant(info: cp.TenantInfo, as_json: bool) -> None:
    if as_json:
        _print_json(info.to_dict())
        return
    lim = ", ".join(f"{k}={'-' if v is None else v}" for k, v in info.limits.to_dict().items())
    print(f"{info.name}: {info.keys} active key(s); limits: {lim}")


def cmd_tenants_create(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        info, created = await c.create_tenant(args.name, _limits_from(args, TenantLimits()))
        _show_tenant(info, args.json)
        if not created and not args.json:
            print("(the tenant already existed)", file=sys.stderr)
        return 0

    return _run(args, op)


def cmd_tenants_list(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        tenants = await c.list_tenants()
        if args.json:
            _print_json([t.to_dict() for t in tenants])
            return 0
        for t in tenants:
            _show_tenant(t, False)
        return 0

    return _run(args, op)


def cmd_tenants_delete(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        n = await c.delete_tenant(args.name)
        print(f"deleted tenant {args.name}; revoked {n} key(s)")
        return 0

    return _run(args, op)


def cmd_tenants_limits(args: argparse.Namespace) -> int:
    async def op(c: cp.ControlPlane) -> int:
        current = await c.get_tenant(args.name)
        limits = _limits_from(args, current.limits)
        info = current if limits is None else await c.set_limits(args.name, limits)
        _show_tenant(info, args.json)
        return 0

    return _run(args, op)


# ---- admin serve ----


def cmd_admin_serve(args: argparse.Namespace) -> int:
    from sidegate.admin.server import run_until_signal

    logging.basicConfig(
        level=os.environ.get("SIDEGATE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    token = os.environ.get("SIDEGATE_ADMIN_TOKEN") or None
    if token is None and not args.insecure_no_auth:
        print(
            "refusing to start: set SIDEGATE_ADMIN_TOKEN (or pass --insecure-no-auth to run without authentication)",
            file=sys.stderr,
        )
        return 2
    if token is None:
        logging.getLogger("sidegate.admin").warning(
            "admin API running WITHOUT authentication (--insecure-no-auth)"
        )
    elif len(token) < 16:
        logging.getLogger("sidegate.admin").warning(
            "SIDEGATE_ADMIN_TOKEN is short; use 32+ random characters"
        )
    settings = cfg = None
    if args.config:
        from sidegate import config

        try:
            cfg = config.load(args.config)  # routing documents are validated inside it
        except config.ConfigError as exc:
            raise SystemExit(f"{exc.source}: invalid configuration: {'; '.join(exc.problems)}") from None
        settings = cfg.admin
    asyncio.run(run_until_signal(_client(args), args.host, args.port, token, settings, cfg))
    return 0


# ---- wiring ----


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> argparse.ArgumentParser:
    p.add_argument("-c", "--config", help="config file whose store.url to use (default: $SIDEGATE_REDIS_URL)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _expiry_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--expires-in", type=duration, help="lifetime of the new key, e.g. 30d (default: never expires)"
    )
    g.add_argument("--expires-at", type=float, help="expiry as Unix time in seconds")


def _limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpm", type=_limit(int), help="requests per minute ('none' = unlimited)")
    p.add_argument("--tpm", type=_limit(int), help="tokens per minute ('none' = unlimited)")
    p.add_argument("--daily-usd", type=_limit(float), help="spend per UTC day in USD ('none' = unlimited)")
    p.add_argument(
        "--monthly-usd", type=_limit(float), help="spend per UTC month in USD ('none' = unlimited)"
    )


def add_commands(root: Any, keys_sub: Any) -> None:
    """Add the key commands to ``keys_sub`` and the ``tenants`` and ``admin`` groups to ``root``."""
    p = _common(keys_sub.add_parser("create", help="create a key in the store (shown once)"))
    p.add_argument("--tenant", required=True)
    p.add_argument("--model", action="append", help="allowed client model (repeat; default: '*' = all)")
    p.add_argument("--team", help="the tenant's team the key belongs to (its limits and allow-list apply)")
    p.add_argument("--user", help="the tenant's user the key belongs to (and so to the user's team)")
    _expiry_args(p)
    p.set_defaults(func=cmd_keys_create)
    p = _common(keys_sub.add_parser("list", help="list keys in the store (never hashes or secrets)"))
    p.add_argument("--tenant")
    p.set_defaults(func=cmd_keys_list)
    p = _common(keys_sub.add_parser("revoke", help="revoke a key (applies within a second)"))
    p.add_argument("id")
    p.set_defaults(func=cmd_keys_revoke)
    p = _common(keys_sub.add_parser("rotate", help="new key for the same tenant; the old one expires later"))
    p.add_argument("id")
    p.add_argument(
        "--overlap",
        type=duration,
        default=cp.DEFAULT_OVERLAP_S,
        help="how long the old key stays valid (default 1h)",
    )
    _expiry_args(p)
    p.set_defaults(func=cmd_keys_rotate)

    pt = root.add_parser("tenants", help="tenants and their limits").add_subparsers(
        dest="tenants_cmd", required=True
    )
    p = _common(pt.add_parser("create", help="register a tenant (optionally with limits)"))
    p.add_argument("name")
    _limit_args(p)
    p.set_defaults(func=cmd_tenants_create)
    p = _common(pt.add_parser("list", help="list tenants with their limits"))
    p.set_defaults(func=cmd_tenants_list)
    p = _common(pt.add_parser("delete", help="delete a tenant and revoke its keys"), json_flag=False)
    p.add_argument("name")
    p.set_defaults(func=cmd_tenants_delete)
    p = _common(pt.add_parser("limits", help="show, or change with flags, a tenant's limits"))
    p.add_argument("name")
    _limit_args(p)
    p.set_defaults(func=cmd_tenants_limits)

    pa = root.add_parser("admin", help="the admin HTTP API").add_subparsers(dest="admin_cmd", required=True)
    p = _common(pa.add_parser("serve", help="serve the admin API (token from $SIDEGATE_ADMIN_TOKEN)"), False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_ADMIN_PORT, help="default %(default)s")
    p.add_argument("--insecure-no-auth", action="store_true", help="run without a token (local testing only)")
    p.set_defaults(func=cmd_admin_serve)
    from sidegate.admin import cli_roles

    cli_roles.add_commands(pa, _common, _run, duration)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sidegate", description="Sidegate control plane commands.")
    root = ap.add_subparsers(dest="cmd", required=True)
    keys_sub = root.add_parser("keys", help="tenant API keys").add_subparsers(dest="keys_cmd", required=True)
    add_commands(root, keys_sub)
    args = ap.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

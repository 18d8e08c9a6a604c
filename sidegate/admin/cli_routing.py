"""`sidegate models|providers|prices|routing ...`: the routing document's versions, straight in the
store as the other control-plane commands (owner principal ``cli:<user>``; wired into `sidegate` by
sidegate/cli.py). Every change is validated inside the configuration given with ``-c`` (without
one, inside an otherwise empty configuration) and makes one new version, audited.

    sidegate models set gpt-4o --route openai --route azure:gpt-4o-prod:weight=10 --policy cost
    sidegate models set gpt-4o -f model.yaml
    sidegate providers set azure -f azure.yaml
    sidegate prices set gpt-4o --input 2.5 --output 10
    sidegate routing apply -f routing.yaml      # a routing document, or a whole config file
    sidegate routing diff 7 9 ; sidegate routing rollback [--to N]

A refused change prints its problems (with their locations) and exits 2; nothing is stored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from sidegate.admin import controlplane as cp
from sidegate.admin.cli import _common, _print_json, _run_on, _when
from sidegate.admin.controlplane.routing import InvalidConfig, RoutingPlane
from sidegate.admin.principal import cli_principal
from sidegate.config.routing import SECTIONS, routing_doc

_ROUTE_KEYS = {"weight": int, "priority": int, "model": str}


def _base(args: argparse.Namespace) -> Any:
    from sidegate import config

    if not getattr(args, "config", None):
        return config.SidegateConfig(providers={}, models={})
    try:
        return config.load(args.config)
    except config.ConfigError as exc:
        raise SystemExit(f"{exc.source}: invalid configuration: {'; '.join(exc.problems)}") from None


def _run(args: argparse.Namespace, op: Callable[[RoutingPlane], Awaitable[int]]) -> int:
    async def refusing(rp: RoutingPlane) -> int:
        try:
            return await op(rp)
        except InvalidConfig as exc:
            print("refused: the routing document would be invalid:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 2

    return _run_on(args, lambda redis: RoutingPlane(redis, _base(args), cli_principal()), refusing)


def _read(path: str) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{path}: cannot read ({exc})") from None


def _changed(args: argparse.Namespace, version: int, what: str) -> int:
    if args.json:
        _print_json({"version": version})
    else:
        print(f"{what}: now version {version}")
    return 0


def route_spec(text: str) -> dict[str, Any]:
    """``provider[:model][:weight=N][:priority=N]`` -> a route (``azure:gpt-4o-prod:weight=10``)."""
    provider, *rest = text.split(":")
    route: dict[str, Any] = {"provider": provider}
    for part in rest:
        key, eq, value = part.partition("=")
        if not eq:
            key, value = "model", part
        if key not in _ROUTE_KEYS or not value:
            raise argparse.ArgumentTypeError(
                f"not a route: {text!r} (provider[:model][:weight=N][:priority=N])"
            )
        try:
            route[key] = _ROUTE_KEYS[key](value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key} must be a whole number in {text!r}") from None
    return route


def _summary(section: str, name: str, value: dict[str, Any]) -> str:
    if section == "models":
        routes = " -> ".join(
            r["provider"]
            + (f":{r['model']}" if r.get("model") else "")
            + (f" w{r['weight']}" if "weight" in r else "")
            for r in value.get("routes", [])
        )
        return f"{name}: {routes} (policy {(value.get('policy') or {}).get('kind', 'ordered')})"
    if section == "providers":
        return f"{name}: {value.get('api')} {value.get('base_url', '')}"
    fields = ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return f"{name}: {fields} (USD per Mtok)"


# list / show / delete (every section)


def cmd_list(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        n, entries = await rp.section(args.section)
        if args.json:
            _print_json({"version": n, args.section: entries})
            return 0
        print(f"# routing version {n}")
        for name in sorted(entries):
            print(_summary(args.section, name, entries[name]))
        return 0

    return _run(args, op)


def cmd_show(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        n, value = await rp.entry(args.section, args.name)
        if args.json:
            _print_json({"version": n, "name": args.name, args.section[:-1]: value})
        else:
            print(yaml.safe_dump({args.name: value}, sort_keys=False).rstrip())
        return 0

    return _run(args, op)


def cmd_delete(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        n = await rp.delete_entry(args.section, args.name, args.expect_version)
        return _changed(args, n, f"deleted {args.section[:-1]} {args.name}")

    return _run(args, op)


# set


def _set_entry(args: argparse.Namespace, section: str, edit: Callable[[dict[str, Any]], None]) -> int:
    """`<section> set NAME`: the entry from a file (-f), else the current one (empty when new) as
    `edit` changes it from the command's flags."""

    async def op(rp: RoutingPlane) -> int:
        if args.file:
            value = _read(args.file)
        else:
            _, entries = await rp.section(section)
            value = dict(entries.get(args.name) or {})
            edit(value)
        n = await rp.put_entry(section, args.name, value, args.expect_version)
        return _changed(args, n, f"{section[:-1]} {args.name} set")

    return _run(args, op)


def cmd_models_set(args: argparse.Namespace) -> int:
    def edit(value: dict[str, Any]) -> None:
        if args.route:
            value["routes"] = args.route
        if args.policy:
            value["policy"] = {**(value.get("policy") or {}), "kind": args.policy}
        if not value.get("routes"):
            raise cp.Invalid(f"model {args.name} is new: give its routes (--route) or a file (-f)")

    return _set_entry(args, "models", edit)


def cmd_providers_set(args: argparse.Namespace) -> int:
    def edit(value: dict[str, Any]) -> None:
        for key in ("api", "base_url", "api_key_env"):
            if getattr(args, key) is not None:
                value[key] = getattr(args, key)

    return _set_entry(args, "providers", edit)


def cmd_prices_set(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        price = {"input_per_mtok": args.input, "output_per_mtok": args.output}
        for key in ("cached_input_per_mtok", "cache_write_per_mtok"):
            if getattr(args, key) is not None:
                price[key] = getattr(args, key)
        n = await rp.put_entry("prices", args.model, price, args.expect_version)
        return _changed(args, n, f"price of {args.model} set")

    return _run(args, op)


# routing


def cmd_routing_show(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        if args.version is None:
            n, doc = await rp.current()
        else:
            n, doc = args.version, await rp.version_at(args.version)
        if args.json:
            _print_json({"version": n, "doc": doc})
        else:
            print(f"# routing version {n}")
            print(yaml.safe_dump(doc, sort_keys=False).rstrip())
        return 0

    return _run(args, op)


def cmd_routing_history(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        entries = await rp.history(args.limit)
        if args.json:
            _print_json(entries)
            return 0
        for e in entries:
            changed = ", ".join(e["changed"]) or "-"
            note = f" ({e['message']})" if e.get("message") else ""
            print(f"{e['version']:>5} {_when(e['at'])} {e['source']:<8} {e['actor']}{note}: {changed}")
        return 0

    return _run(args, op)


def cmd_routing_diff(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        if len(args.versions) > 2:
            raise cp.Invalid("diff takes at most two versions: [A] [B]")
        a, b = args.versions + [None] * (2 - len(args.versions))
        if b is None and a is not None:  # one version: from it to the current
            out = await rp.diff(a, None)
        else:
            out = await rp.diff(a, b)
        if args.json:
            _print_json(out)
            return 0
        print(f"# version {out['from']} -> {out['to']}")
        for mark, key in (("+", "added"), ("-", "removed"), ("~", "changed")):
            for name in out[key]:
                print(f"{mark} {name}")
        return 0

    return _run(args, op)


def _doc_from_file(path: str) -> Any:
    """A routing document, or a whole config file's (its routing sections, validated as a config)."""
    data = _read(path)
    if isinstance(data, dict) and set(data) - set(SECTIONS):
        from sidegate import config

        try:
            return routing_doc(config.parse(data, path))
        except config.ConfigError as exc:
            raise InvalidConfig(exc.problems) from None
    return data


def cmd_routing_apply(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        n = await rp.put_doc(_doc_from_file(args.file), args.message or f"applied {Path(args.file).name}",
                             args.expect_version)  # fmt: skip
        return _changed(args, n, f"applied {args.file}")

    return _run(args, op)


def cmd_routing_rollback(args: argparse.Namespace) -> int:
    async def op(rp: RoutingPlane) -> int:
        n, to = await rp.rollback(args.to)
        return _changed(args, n, f"rolled back to version {to}")

    return _run(args, op)


def _expect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expect-version", type=int, help="refuse unless the document is still at this version")


def add_commands(root: Any) -> None:
    """The ``models``, ``providers``, ``prices`` and ``routing`` groups."""
    for section, what in (("models", "models: route chains, weights, policies"),
                          ("providers", "providers (credentials by reference only)"),
                          ("prices", "the price table (USD per million tokens)")):  # fmt: skip
        group = root.add_parser(section, help=what).add_subparsers(dest=f"{section}_cmd", required=True)
        _common(group.add_parser("list", help=f"every {section[:-1]}")).set_defaults(
            func=cmd_list, section=section
        )
        if section != "prices":
            p = _common(group.add_parser("show", help=f"one {section[:-1]}"))
            p.add_argument("name")
            p.set_defaults(func=cmd_show, section=section)
        p = _common(group.add_parser("delete", help=f"delete a {section[:-1]} (a new version)"))
        p.add_argument("name")
        _expect(p)
        p.set_defaults(func=cmd_delete, section=section)
        p = _common(group.add_parser("set", help=f"create or change a {section[:-1]} (a new version)"))
        _expect(p)
        if section == "models":
            p.add_argument("name")
            p.add_argument(
                "-f", "--file", help="the whole model (YAML or JSON), as in the config's models.<name>"
            )
            p.add_argument(
                "--route",
                action="append",
                type=route_spec,
                help="provider[:model][:weight=N][:priority=N] (repeat, in order; replaces the chain)",
            )
            p.add_argument("--policy", choices=["ordered", "cost", "latency"], help="routing policy")
            p.set_defaults(func=cmd_models_set)
        elif section == "providers":
            p.add_argument("name")
            p.add_argument(
                "-f", "--file", help="the whole provider (YAML or JSON), as in the config's providers.<name>"
            )
            p.add_argument("--api", help="openai, anthropic, responses, gemini, bedrock")
            p.add_argument("--base-url")
            p.add_argument("--api-key-env", help="the environment variable holding its key (never the key)")
            p.set_defaults(func=cmd_providers_set)
        else:
            p.add_argument("model")
            p.add_argument("--input", type=float, required=True, help="USD per million input tokens")
            p.add_argument("--output", type=float, required=True, help="USD per million output tokens")
            p.add_argument("--cached-input", dest="cached_input_per_mtok", type=float)
            p.add_argument("--cache-write", dest="cache_write_per_mtok", type=float)
            p.set_defaults(func=cmd_prices_set)  # fmt: skip

    group = root.add_parser("routing", help="the routing document: versions, history, diff, apply, rollback")
    sub = group.add_subparsers(dest="routing_cmd", required=True)
    p = _common(sub.add_parser("show", help="the current document (or --version N)"))
    p.add_argument("--version", type=int)
    p.set_defaults(func=cmd_routing_show)
    p = _common(sub.add_parser("history", help="the versions, newest first"))
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_routing_history)
    p = _common(sub.add_parser("diff", help="what changed: [A] [B] (default: the last change)"))
    p.add_argument("versions", nargs="*", type=int, metavar="N")
    p.set_defaults(func=cmd_routing_diff)
    p = _common(sub.add_parser("apply", help="replace the whole document from a file (validated first)"))
    p.add_argument("-f", "--file", required=True)
    p.add_argument("-m", "--message")
    _expect(p)
    p.set_defaults(func=cmd_routing_apply)
    p = _common(sub.add_parser("rollback", help="a new version with an earlier version's document"))
    p.add_argument("--to", type=int, help="the version (default: the one before the current)")
    p.set_defaults(func=cmd_routing_rollback)

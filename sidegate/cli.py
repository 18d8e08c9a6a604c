"""The `sidegate` command."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

from sidegate import config as config_mod
from sidegate import keys
from sidegate.bootstrap import render

DEMO_KEY = "sgk_demo0001_demo-key-not-a-secret-0000000000"


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = config_mod.load_or_exit(args.config)
    missing = [f"{n}: {p.api_key_env}" for n, p in cfg.providers.items() if p.api_key_env and not p.api_key()]
    print(f"{args.config}: OK ({len(cfg.providers)} providers, {len(cfg.models)} models, {len(cfg.tenants)} tenants)")
    for m in missing:
        print(f"  warning: provider key variable not set: {m}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    cfg = config_mod.load_or_exit(args.config)
    # xDS mode (services.xds, the default): the bootstrap points Envoy at `sidegate serve xds`
    text = render.render_yaml(cfg, xds=cfg.services.xds and not args.static)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_keys_hash(args: argparse.Namespace) -> int:
    key = args.key or keys.new_key(args.id)[0]
    kid = keys.key_id(key)
    if kid is None:
        print("not a Sidegate key (expected sgk_<8 chars>_<secret>)", file=sys.stderr)
        return 2
    print(f"key:  {key}    (shown once: give it to the tenant; it is not stored)")
    print(f"id:   {kid}")
    print(f"hash: {keys.hash_key(key)}")
    return 0


def cmd_internal_token(args: argparse.Namespace) -> int:
    """Write a new internal token file (Envoy reads it; the services too): a pod's init container,
    a compose one-shot service, or an operator rotating it."""
    from sidegate import trust

    path = Path(args.output)
    if args.keep and trust.read_token_file(path):
        print(f"{path}: kept the token already there")
        return 0
    trust.write_private(path, trust.token_file_text(trust.generate()))
    print(f"{path}: wrote a new internal token (readable by this user only)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # The services are the adapter packages' entry points (the library never imports them); the
    # process keeps its PID. The service loads and checks the config.
    from sidegate.supervisor.children import service_command

    os.execv(sys.executable, service_command(args.service, args.config))


def _up(cfg_path: Path, cfg: config_mod.SidegateConfig, env: dict[str, str]) -> int:
    from sidegate.supervisor import Supervisor

    sup = Supervisor(cfg_path=cfg_path, cfg=cfg, env=env, drain_s=cfg.services.drain_s)
    sup.start()
    base = f"http://{cfg.listener.host}:{cfg.listener.port}"
    print(f"Sidegate is up: {base}/v1  (Envoy admin http://127.0.0.1:{cfg.listener.admin_port})", flush=True)
    return sup.run_forever()


def cmd_up(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return _up(Path(args.config), config_mod.load_or_exit(args.config), dict(os.environ))


def cmd_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg_path = Path(str(resources.files("sidegate") / "data" / "demo.yaml"))
    cfg = config_mod.load_or_exit(str(cfg_path))
    env = dict(os.environ)
    env.setdefault("DEMO_OPENAI_API_KEY", "sk-demo-openai-provider-key")
    env.setdefault("DEMO_ANTHROPIC_API_KEY", "sk-ant-demo-anthropic-provider-key")
    ports = [str(cfg.providers[n].port) for n in ("openai", "anthropic")]
    fakes = subprocess.Popen([sys.executable, "-m", "sidegate.fakes", "--port", ports[0], "--port", ports[1]], env=env)
    try:
        print(f"Demo providers (fakes) on ports {', '.join(ports)}. Demo tenant key: {DEMO_KEY}", flush=True)
        print(
            f"Try: curl http://127.0.0.1:{cfg.listener.port}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' "
            "-H 'content-type: application/json' -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'",
            flush=True,
        )
        return _up(cfg_path, cfg, env)
    finally:
        fakes.terminate()
        fakes.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sidegate", description="An AI gateway that rides beside Envoy.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("validate", help="check a config file and report errors with their location")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("render", help="print the Envoy bootstrap rendered from a config")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("-o", "--output")
    p.add_argument("--static", action="store_true", help="everything in the bootstrap (no xDS server), whatever services.xds says")
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("up", help="run store (embedded if no URL), authz, extproc and Envoy")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("demo", help="like `up`, with fake OpenAI/Anthropic providers and a demo key")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("serve", help="run one service (the process `up` starts for it)")
    p.add_argument("service", choices=["authz", "extproc", "xds"])
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("internal-token", help="write a new secret Envoy presents to the services (an SDS file)")
    p.add_argument("-o", "--output", required=True, help="the file (services.internal_token_file)")
    p.add_argument("--keep", action="store_true", help="keep a token the file already holds")
    p.set_defaults(func=cmd_internal_token)
    pk = sub.add_parser("keys", help="tenant API keys").add_subparsers(dest="keys_cmd", required=True)
    p = pk.add_parser("hash", help="make a new key (or hash a given one) for a config's tenants.*.keys")
    p.add_argument("--id", help="8 lowercase letters/digits (default: random)")
    p.add_argument("--key", help="hash this existing key instead of making one")
    p.set_defaults(func=cmd_keys_hash)
    from sidegate.admin import cli as admin_cli
    from sidegate.admin import cli_org, cli_roles, cli_routing
    from sidegate.features.ledger import archive_cli
    from sidegate.features.ledger import cli as ledger_cli
    from sidegate.features.ledger import service as ledger_service

    admin_cli.add_commands(sub, pk)
    cli_org.add_commands(sub)
    cli_routing.add_commands(sub)
    ledger_cli.add_commands(sub, audit_export=cli_roles.ledger_audit_export)
    ledger_service.add_commands(sub)
    archive_cli.add_commands(sub)
    args = ap.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

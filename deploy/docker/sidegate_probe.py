#!/usr/bin/env python3
"""Container health probe and Envoy drain hook for the Sidegate image (installed as /usr/local/bin/sidegate-probe).

  sidegate-probe check [auto|envoy|authz|extproc] [--port N] [--timeout S]
      envoy:   GET http://127.0.0.1:<admin>/ready must answer 200 (Envoy's admin listens on loopback only,
               so Kubernetes cannot httpGet it from the node; this runs inside the container instead).
      authz:   grpc.health.v1 Check for envoy.service.auth.v3.Authorization must be SERVING.
      extproc: grpc.health.v1 Check for envoy.service.ext_proc.v3.ExternalProcessor must be SERVING.
      auto:    the role is read from PID 1's command line (`envoy ...`, `sidegate serve authz|extproc -c F`,
               which runs as `python -m authz|extproc -c F`, `sidegate up|demo`), and the ports from the config file or bootstrap it names.
  sidegate-probe drain [--seconds S] [--port N]
      Envoy preStop hook: POST /drain_listeners?graceful, then wait until no request is active on the
      `sidegate` listener (or S seconds pass).

Exit status 0 = healthy / drained, 1 = not healthy, 2 = usage error. Standard library only for the Envoy
paths (cheap to run every few seconds); the gRPC check imports grpcio, which the image already has.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SERVICES = {
    "authz": "envoy.service.auth.v3.Authorization",
    "extproc": "envoy.service.ext_proc.v3.ExternalProcessor",
}
DEFAULT_PORTS = {"envoy": 9901, "authz": 9001, "extproc": 9002}
PORT_ENV = {
    "envoy": "SIDEGATE_ADMIN_PORT",
    "authz": "SIDEGATE_AUTHZ_PORT",
    "extproc": "SIDEGATE_EXTPROC_PORT",
}
ACTIVE_STAT = "http.sidegate.downstream_rq_active"


def _argv_of_pid1(proc: Path = Path("/proc/1/cmdline")) -> list[str]:
    try:
        return [a for a in proc.read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def detect(argv: list[str]) -> tuple[str, int | None]:
    """(role, port or None) from a command line such as PID 1's."""
    names = [Path(a).name for a in argv]
    if "serve" in names:
        i = names.index("serve")
        role = names[i + 1] if i + 1 < len(names) else ""
        if role in SERVICES:
            return role, _port_from_config(role, _option(argv, "-c", "--config"))
    if "-m" in names:  # `sidegate serve X` replaces itself with `python -m X -c F`
        i = names.index("-m")
        role = names[i + 1] if i + 1 < len(names) else ""
        if role in SERVICES:
            return role, _port_from_config(role, _option(argv, "-c", "--config"))
    if names and names[0] == "envoy":
        return "envoy", _admin_port_from_bootstrap(_option(argv, "-c", "--config-path"))
    if "up" in names or "demo" in names:
        return "envoy", _port_from_config("envoy", _option(argv, "-c", "--config"))
    return "envoy", None


def _port_from_config(role: str, path: str | None) -> int | None:
    if not path:
        return None
    try:
        from sidegate import config
    except ImportError:
        return None
    try:
        cfg = config.load(path)
    except config.ConfigError:
        return None
    if role == "envoy":
        return cfg.listener.admin_port
    return cfg.services.authz_port if role == "authz" else cfg.services.extproc_port


def _admin_port_from_bootstrap(path: str | None) -> int | None:
    if not path:
        return None
    try:
        import yaml

        doc = yaml.safe_load(Path(path).read_text())
        return int(doc["admin"]["address"]["socket_address"]["port_value"])
    except (OSError, ImportError, KeyError, TypeError, ValueError):
        return None


def resolve_port(role: str, explicit: int | None, detected: int | None) -> int:
    if explicit:
        return explicit
    if detected:
        return detected
    env = os.environ.get(PORT_ENV[role])
    return int(env) if env and env.isdigit() else DEFAULT_PORTS[role]


def envoy_ready(port: int, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def grpc_serving(port: int, service: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def active_requests(port: int, timeout: float) -> int | None:
    url = f"http://127.0.0.1:{port}/stats?filter=^{ACTIVE_STAT}$"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            for line in resp.read().decode().splitlines():
                name, _, value = line.partition(":")
                if name.strip() == ACTIVE_STAT:
                    return int(value.strip())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return 0


def drain(port: int, seconds: float, timeout: float) -> bool:
    """Start Envoy's graceful listener drain, then wait (bounded) for active requests to finish."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/drain_listeners?graceful", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            pass
    except (urllib.error.URLError, OSError):
        return False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        active = active_requests(port, timeout)
        if not active:
            return True
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sidegate-probe", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check", help="exit 0 when the role's health check passes")
    p.add_argument("role", nargs="?", default="auto", choices=["auto", "envoy", *SERVICES])
    p.add_argument("--port", type=int)
    p.add_argument("--timeout", type=float, default=2.0)
    p = sub.add_parser("drain", help="Envoy preStop: drain listeners gracefully, wait for requests to end")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--port", type=int)
    p.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args(argv)

    role, detected = ("envoy", None) if args.cmd == "drain" else (args.role, None)
    if role == "auto":
        role, detected = detect(_argv_of_pid1())
    port = resolve_port(role, args.port, detected)
    if args.cmd == "drain":
        drained = drain(port, args.seconds, args.timeout)
        print("drained" if drained else "drain incomplete (deadline or admin unreachable)")
        return 0  # a preStop hook that fails only adds a warning event; never block termination on it
    ok = (
        envoy_ready(port, args.timeout)
        if role == "envoy"
        else grpc_serving(port, SERVICES[role], args.timeout)
    )
    print(f"{role} on port {port}: {'ok' if ok else 'NOT ready'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The children `sidegate up` starts after the store, and their command lines: the Python services
(authz, extproc workers, admin API, ledger runner), the xDS server and Envoy (with its bootstrap:
static, or xDS mode's when `services.xds`)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sidegate import trust
from sidegate.bootstrap import render
from sidegate.config import SidegateConfig, local_address
from sidegate.features.ledger.service import runner_wanted
from sidegate.metrics_server import SUPERVISOR_STATE_ENV as STATE_ENV

PY = [sys.executable, "-m", "sidegate.cli"]
SERVICE_MODULES = {"authz": "authz", "extproc": "extproc", "xds": "sidegate.xds"}


def service_command(service: str, cfg_path: Path | str) -> list[str]:
    """A service process's command line: what `sidegate serve` execs (cli.cmd_serve) and what the
    supervisor starts directly (the CLI's own imports first would only add ~0.3 s of CPU to each
    start). `-P`: the working directory is not put on the import path (a file there named like a
    module could otherwise be imported)."""
    return [sys.executable, "-P", "-m", SERVICE_MODULES[service], "-c", str(cfg_path)]


@dataclass
class Spec:
    """One child to start: its name, command, the port that says it is up, extra environment."""

    name: str
    cmd: list[str]
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)


def service_host(cfg: SidegateConfig) -> str:
    svc = cfg.services
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(svc.host, svc.host)


def xds_child(cfg: SidegateConfig, cfg_path: Path, token_file: Path) -> Spec:
    """`sidegate serve xds` (what it execs, without the CLI's imports first: the stack's start must
    not wait on it); it renders clusters naming this start's token file."""
    return Spec("xds", service_command("xds", cfg_path), cfg.services.xds_port, service_host(cfg),
                env={"SIDEGATE_INTERNAL_TOKEN_FILE": str(token_file)})  # fmt: skip


def service_children(cfg: SidegateConfig, cfg_path: Path, workdir: Path, state_path: Path, *, admin: bool,
                     ledger_port: int | None) -> list[Spec]:  # fmt: skip
    """authz and extproc workers, then the admin API (with an admin token) and the ledger runner."""
    svc = cfg.services
    host = service_host(cfg)
    out: list[Spec] = []
    for service, port, workers, metrics_port in (
        ("authz", svc.authz_port, svc.authz_workers, svc.authz_metrics_port),
        ("extproc", svc.extproc_port, svc.extproc_workers, svc.metrics_port),
    ):
        if service == "authz" and svc.auth == "inline":
            continue  # the gateway ext_proc authenticates itself
        env: dict[str, str] = {}
        if workers > 1 and metrics_port:  # one /metrics for all workers of a service
            mdir = workdir / f"metrics-{service}"
            shutil.rmtree(mdir, ignore_errors=True)
            mdir.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(mdir)
        for i in range(workers):
            name = service if i == 0 else f"{service}-{i}"
            worker_env = {**env, f"SIDEGATE_{service.upper()}_PORT": str(port + i)}
            if service == "extproc":
                worker_env |= {
                    "SIDEGATE_EXTPROC_WORKER": str(i),
                    "SIDEGATE_FRONT_PORT": str(svc.front_port + i),
                    "SIDEGATE_LEAN_PORT": str(svc.lean_port + i),
                    STATE_ENV: str(state_path),
                }  # its /metrics shows the restart counts
            out.append(
                Spec(name, service_command(service, cfg_path), port + i, host, env=worker_env)
            )
    if admin:
        cmd = [
            sys.executable,
            "-m",
            "sidegate.admin.cli",  # `sidegate admin serve` without the other commands' imports
            "admin",
            "serve",
            "-c",
            str(cfg_path),
            "--host",
            svc.admin_host,
            "--port",
            str(svc.admin_port),
        ]
        out.append(
            Spec(
                "admin", cmd, svc.admin_port, host if svc.admin_host in ("0.0.0.0", "::") else svc.admin_host
            )
        )
    if (
        ledger_port is not None
    ):  # `sidegate ledger run`: ships the ledger to ClickHouse; listens on its /metrics
        run = [*PY, "ledger", "run", "-c", str(cfg_path), "--metrics-port", str(ledger_port)]
        out.append(Spec("ledger", run, ledger_port, local_address(svc.metrics_host)))
    return out


def ledger_wanted(cfg: SidegateConfig) -> bool:
    return runner_wanted(cfg)


def envoy_child(
    cfg: SidegateConfig, workdir: Path, token_file: Path, envoy: str, log_level: str, concurrency: int
) -> Spec:
    """Envoy with this start's bootstrap: xDS mode's (`services.xds`: the rest comes from the xDS
    child) or the static one; both name this start's token file."""
    bootstrap = workdir / "envoy.yaml"
    services = cfg.services.model_copy(update={"internal_token_file": str(token_file)})
    trust.write_private(
        bootstrap, render.render_yaml(cfg.model_copy(update={"services": services}), xds=cfg.services.xds)
    )
    cmd = [
        envoy, "-c", str(bootstrap), "--use-dynamic-base-id", "-l", log_level,
        "--drain-time-s", "5", "--parent-shutdown-time-s", "10",
        "--concurrency", str(concurrency),
    ]  # fmt: skip
    return Spec("envoy", cmd, cfg.listener.port, cfg.listener.host)

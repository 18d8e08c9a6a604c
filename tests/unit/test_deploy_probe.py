"""deploy/docker/sidegate_probe.py (the image's `sidegate-probe`) against real servers: a grpc.aio
server with Sidegate's standard health service, and a real Envoy for /ready and the graceful drain."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from sidegate.health import add_health, set_serving
from sidegate.ports import free_port
from sidegate.supervisor import envoy_binary

ROOT = Path(__file__).resolve().parents[2]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location(
        "sidegate_probe", ROOT / "deploy" / "docker" / "sidegate_probe.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


probe = _load()


def test_detects_role_and_port_from_the_command_line(tmp_path):
    cfg = tmp_path / "sg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "listener": {"admin_port": 19901},
                "services": {"authz_port": 19001, "extproc_port": 19002},
                "providers": {"p": {"api": "openai", "base_url": "http://p:1"}},
                "models": {"m": {"routes": [{"provider": "p"}]}},
            }
        )
    )
    py = ["/opt/venv/bin/python", "/opt/venv/bin/sidegate"]
    assert probe.detect([*py, "serve", "authz", "-c", str(cfg)]) == ("authz", 19001)
    assert probe.detect([*py, "serve", "extproc", "--config", str(cfg)]) == ("extproc", 19002)
    assert probe.detect([*py, "up", "-c", str(cfg)]) == ("envoy", 19901)
    # `sidegate serve X` replaces itself with the adapter's entry point (PID 1 keeps that command line)
    assert probe.detect(["/opt/venv/bin/python", "-m", "extproc", "-c", str(cfg)]) == ("extproc", 19002)
    assert probe.detect(["/opt/venv/bin/python", "-P", "-m", "authz", "-c", str(cfg)]) == ("authz", 19001)
    boot = tmp_path / "envoy.yaml"
    boot.write_text(
        yaml.safe_dump(
            {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9911}}}}
        )
    )
    assert probe.detect(["envoy", "-c", str(boot), "--drain-time-s", "15"]) == ("envoy", 9911)
    assert probe.detect(["/usr/local/bin/envoy", "-c", "/missing.yaml"]) == ("envoy", None)
    assert probe.resolve_port("authz", None, None) == 9001
    assert probe.resolve_port("authz", 7, 8) == 7


def test_grpc_check_follows_the_health_service():
    async def scenario() -> list[int]:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        health = add_health(server)
        await server.start()
        try:
            codes = []
            await set_serving(health, "envoy.service.auth.v3.Authorization", serving=False)
            codes.append(await asyncio.to_thread(probe.main, ["check", "authz", "--port", str(port)]))
            await set_serving(health, "envoy.service.auth.v3.Authorization")
            codes.append(await asyncio.to_thread(probe.main, ["check", "authz", "--port", str(port)]))
            # extproc's service name is not registered on this server: unknown service -> not healthy
            codes.append(await asyncio.to_thread(probe.main, ["check", "extproc", "--port", str(port)]))
            return codes
        finally:
            await server.stop(0)

    assert asyncio.run(scenario()) == [1, 0, 1]
    assert probe.main(["check", "authz", "--port", str(free_port()), "--timeout", "0.5"]) == 1


@pytest.fixture
def envoy(tmp_path):
    admin, listen = free_port(), free_port()
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "sidegate",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "v",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    boot = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "sidegate",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ]
        },
    }
    f = tmp_path / "envoy.yaml"
    f.write_text(yaml.safe_dump(boot))
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(f), "--use-dynamic-base-id", "-l", "error", "--drain-time-s", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield admin
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_envoy_ready_and_graceful_drain(envoy, capsys):
    deadline = time.monotonic() + 20
    while not probe.envoy_ready(envoy, 0.5):
        assert time.monotonic() < deadline, "envoy did not become ready"
        time.sleep(0.1)
    assert probe.main(["check", "envoy", "--port", str(envoy)]) == 0
    assert probe.active_requests(envoy, 1.0) == 0
    started = time.monotonic()
    assert probe.main(["drain", "--port", str(envoy), "--seconds", "5"]) == 0
    assert "drained" in capsys.readouterr().out
    assert time.monotonic() - started < 5


def test_drain_never_fails_the_hook_when_envoy_is_gone(capsys):
    assert probe.main(["drain", "--port", str(free_port()), "--seconds", "0.5", "--timeout", "0.5"]) == 0
    assert "incomplete" in capsys.readouterr().out
    assert probe.main(["check", "envoy", "--port", str(free_port()), "--timeout", "0.5"]) == 1

"""A real Envoy with the Sidegate bootstrap + JSON access log: every request becomes one JSON line
with the request id and status, and the client's key never appears in it.

The Sidegate services are deliberately not running, so ext_authz fails closed (503) and the 404
route answers directly: enough to exercise the logger without the whole stack.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import yaml

from sidegate import config as config_mod
from sidegate import trust
from sidegate.bootstrap import accesslog, render
from sidegate.ports import free_port, wait_for_port
from sidegate.supervisor import envoy_binary

SECRET_KEY = "sgk_abcd1234_very-secret-tenant-key-0000000000"


def _post(url: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=b'{"model":"gpt-4o-mini"}', headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_access_log_lines_from_real_envoy(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    cfg = config_mod.parse(
        {
            "listener": {"port": port, "admin_port": admin},
            "services": {"authz_port": free_port(), "extproc_port": free_port(), "grpc_timeout_s": 0.5,
                         "internal_token_file": str(tmp_path / "token.yaml")},
            "providers": {"openai": {"api": "openai", "base_url": f"http://127.0.0.1:{free_port()}"}},
            "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
        },
        env={},
    )
    trust.write_private(tmp_path / "token.yaml", trust.token_file_text(trust.generate()))  # Envoy reads it at start
    log_path = tmp_path / "access.log"
    boot = accesslog.add_to_bootstrap(render.bootstrap(cfg), str(log_path))
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(boot))
    cmd = [envoy_binary(), "-c", str(tmp_path / "envoy.yaml"), "--use-dynamic-base-id", "-l", "error",
           "--file-flush-interval-msec", "50"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", port, 20.0, proc)
        base = f"http://127.0.0.1:{port}"
        statuses = [
            _post(f"{base}/v1/chat/completions?key={SECRET_KEY}",
                  {"Authorization": f"Bearer {SECRET_KEY}", "x-request-id": "req-log-1"}),
            _post(f"{base}/v1/messages", {"x-api-key": SECRET_KEY, "x-request-id": "req-log-2",
                                          "content-type": "application/json"}),
        ]  # fmt: skip
        assert all(s >= 400 for s in statuses)
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while time.monotonic() < deadline and len(lines) < 2:
            lines = log_path.read_text().splitlines() if log_path.exists() else []
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert len(lines) == 2, lines
    rows = [orjson.loads(line) for line in lines]
    assert {r["request_id"] for r in rows} == {"req-log-1", "req-log-2"}
    first = next(r for r in rows if r["request_id"] == "req-log-1")
    assert first["status"] == statuses[0] and first["path"] == "/v1/chat/completions"
    assert isinstance(first["duration_ms"], int)  # typed JSON: numbers stay numbers
    assert set(accesslog.FORMAT) == set(first)
    for line in lines:
        assert SECRET_KEY not in line and "abcd1234_very" not in line

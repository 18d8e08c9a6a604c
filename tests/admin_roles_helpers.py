"""Fixtures for the admin-roles tests: a live admin API (`sidegate admin serve -c`) that trusts a test
OIDC issuer (keys generated here, JWKS in a local file), and helpers to mint its callers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import controlplane_helpers as h
import httpx
import pytest
from oidc_helpers import Issuer

from sidegate.ports import free_port, wait_for_port


@dataclass
class Server:
    base: str
    env_token: str
    issuer: Issuer
    log_path: str
    config_path: str
    _http: httpx.Client | None = field(default=None, repr=False)

    @contextmanager
    def client(self, authorization: str | None = None) -> Iterator[httpx.Client]:
        """A client sending ``authorization`` (one connection pool for the whole module: building
        an httpx client costs more than an admin API request)."""
        if self._http is None:
            self._http = httpx.Client(base_url=f"{self.base}/admin/v1", timeout=10)
        self._http.headers.pop("Authorization", None)
        if authorization:
            self._http.headers["Authorization"] = authorization
        yield self._http

    def owner(self) -> Any:
        return self.client(f"Bearer {self.env_token}")

    def new_token(
        self, role: str, tenant: str | None = None, expires_at: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"role": role, "name": f"test {role}"}
        if tenant is not None:
            body["tenant"] = tenant
        if expires_at is not None:
            body["expires_at"] = expires_at
        with self.owner() as c:
            resp = c.post("/admin-tokens", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def log(self) -> str:
        return Path(self.log_path).read_text()


def write_config(path: Path, issuer: Issuer) -> None:
    jwks = path.with_name("jwks.json")
    jwks.write_text(json.dumps(issuer.jwks()))
    cfg = {
        "providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
        "models": {"m": {"routes": [{"provider": "p"}]}},
        "admin": {"oidc": issuer.config(jwks_file=str(jwks))},
    }
    path.write_text(json.dumps(cfg))  # JSON is YAML


@pytest.fixture(scope="module")
def server(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    issuer = Issuer()
    cfg = tmp_path_factory.mktemp("admin-roles") / "sidegate.yaml"
    write_config(cfg, issuer)
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="sidegate-admin-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidegate.admin.cli", "admin", "serve", "--port", str(port), "-c", str(cfg)],
        env=h.cli_env(valkey_url, SIDEGATE_ADMIN_TOKEN=h.ADMIN_TOKEN),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    srv: Server | None = None
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc)
        srv = Server(f"http://127.0.0.1:{port}", h.ADMIN_TOKEN, issuer, log.name, str(cfg))
        yield srv
    finally:
        h._stop(proc)
        if srv is not None and srv._http is not None:
            srv._http.close()
        log.close()
        os.unlink(log.name)

"""A whole Sidegate stack on free loopback ports: Valkey + authz + extproc + Envoy (+ fakes).

Used by the e2e tests and the benchmarks. Everything is real except the LLM providers.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sidegate import config as config_mod
from sidegate import keys
from sidegate.ports import free_port, free_port_block
from sidegate.supervisor import Supervisor

OPENAI_PROVIDER_KEY = "sk-provider-openai-SECRET-0001"
ADMIN_TOKEN = "admin-token-SECRET-0003"
ANTHROPIC_PROVIDER_KEY = "sk-ant-provider-anthropic-SECRET-0002"


FRONT_SERVICES = {"ext_proc": {"auth": "ext_authz", "front": "ext_proc"}, "http": {"auth": "inline", "front": "http"}}
"""The two ways Envoy hands a request to the gateway (docs/architecture.md, "Two fronts"); `http` is
the default, SIDEGATE_E2E_FRONT=ext_proc runs any e2e module behind the gRPC front instead."""


@dataclass
class TenantKey:
    tenant: str
    key: str
    id: str


@dataclass
class Stack:
    workdir: Path
    openai_url: str
    anthropic_url: str
    extra: dict[str, Any] = field(default_factory=dict)
    sup: Supervisor | None = None
    keys: dict[str, TenantKey] = field(default_factory=dict)
    cfg_path: Path | None = None
    cfg_data: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        assert self.sup is not None
        return f"http://127.0.0.1:{self.sup.cfg.listener.port}"

    @property
    def admin_url(self) -> str:
        assert self.sup is not None
        return f"http://127.0.0.1:{self.sup.cfg.listener.admin_port}"

    def _key(self, name: str, tenant: str, models: list[str] | None = None, revoked: bool = False) -> dict[str, Any]:
        key, kid = keys.new_key()
        self.keys[name] = TenantKey(tenant, key, kid)
        return {"id": kid, "hash": keys.hash_key(key), "models": models or ["*"], "revoked": revoked}

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "listener": {"host": "127.0.0.1", "port": free_port(), "admin_port": free_port()},
            "services": {"authz_port": free_port_block(4), "extproc_port": free_port_block(4), "front_port": free_port_block(4), "lean_port": free_port_block(4), "metrics_port": free_port(),
                         "authz_metrics_port": free_port(), "admin_port": free_port(), "xds_port": free_port()},
            "store": {"url": None},
            "providers": {
                "openai": {"api": "openai", "base_url": self.openai_url, "api_key_env": "E2E_OPENAI_KEY"},
                "anthropic": {"api": "anthropic", "base_url": self.anthropic_url, "api_key_env": "E2E_ANTHROPIC_KEY"},
            },
            "models": {
                "gpt-4o-mini": {"routes": [{"provider": "openai"}]},
                "claude-haiku": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
                "gpt-4o": {"routes": [{"provider": "openai", "model": "gpt-4o-2024-08-06"}]},
            },
            "tenants": {
                "acme": {"keys": [self._key("acme", "acme"), self._key("acme-limited", "acme", ["gpt-4o-mini"]),
                                  self._key("acme-revoked", "acme", revoked=True)]},
                "globex": {"keys": [self._key("globex", "globex")]},
            },
        }  # fmt: skip
        front = os.environ.get("SIDEGATE_E2E_FRONT")  # run any e2e module behind the other front
        if front in FRONT_SERVICES:
            _merge(data, {"services": dict(FRONT_SERVICES[front])})
        extra = {k: v for k, v in self.extra.items() if k != "env"}
        _merge(data, extra)
        for p in data["providers"].values():  # placeholders for the fakes' URLs
            p["base_url"] = p["base_url"].replace("FAKE_OPENAI", self.openai_url).replace("FAKE_ANTHROPIC", self.anthropic_url)
        return data

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg_data = self.config()
        self.cfg_path = self.workdir / "sidegate.yaml"
        self.cfg_path.write_text(yaml.safe_dump(self.cfg_data))
        env = dict(os.environ)
        env.pop("SIDEGATE_REDIS_URL", None)
        env["E2E_OPENAI_KEY"] = OPENAI_PROVIDER_KEY
        env["SIDEGATE_ADMIN_TOKEN"] = ADMIN_TOKEN
        env["E2E_ANTHROPIC_KEY"] = ANTHROPIC_PROVIDER_KEY
        env.setdefault("SIDEGATE_LOG_LEVEL", "INFO")
        env.update(self.extra.get("env", {}))
        cfg = config_mod.load(self.cfg_path, env=env)
        self.sup = Supervisor(cfg_path=self.cfg_path, cfg=cfg, workdir=self.workdir, env=env, log_to_files=True)
        self.sup.start()
        return self

    def stop(self) -> None:
        if self.sup is not None:
            self.sup.stop()

    def ledger(self) -> list[Any]:
        """Every usage-ledger record in the stack's store, oldest first."""
        from redis.asyncio import Redis

        from sidegate.features.ledger.reading import iter_records

        assert self.sup is not None

        async def read() -> list[Any]:
            r = Redis.from_url(self.sup.redis_url)
            try:
                return [rec async for _, rec in iter_records(r)]
            finally:
                await r.aclose()

        return asyncio.run(read())

    def envoy_config(self, resource: str) -> list[dict[str, Any]]:
        """What Envoy runs, from its admin `/config_dump` (`resource`: e.g. `dynamic_active_clusters`,
        `dynamic_listeners`): in xDS mode, the default, the bootstrap file holds none of it."""
        import httpx

        r = httpx.get(f"{self.admin_url}/config_dump", params={"resource": resource}, timeout=10)
        r.raise_for_status()
        return list(r.json().get("configs", []))

    def stat(self, name: str) -> int | None:
        """Envoy's counter/gauge `name` from the admin interface (None: Envoy has no such stat)."""
        import re

        import httpx

        text = httpx.get(f"{self.admin_url}/stats", params={"filter": "^" + re.escape(name) + "$"}, timeout=5).text
        m = re.search(r": (\d+)", text)
        return int(m.group(1)) if m else None

    def wait_ledger(self, pred: Any, timeout_s: float = 5.0) -> Any:
        """The newest ledger record matching `pred`, waiting for it (the ledger is written async)."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            recs = [r for r in self.ledger() if pred(r)]
            if recs:
                return recs[-1]
            time.sleep(0.05)
        raise AssertionError("no matching ledger record")

    def logs(self) -> str:
        assert self.sup is not None
        return "\n".join(c.log_path.read_text(errors="replace") for c in self.sup.children if c.log_path)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v




def front_stack(front: str, workdir: Path, openai_url: str, anthropic_url: str,
                extra: dict[str, Any] | None = None) -> Iterator[Stack]:  # fmt: skip
    """A started stack behind `front` (a key of FRONT_SERVICES) whatever SIDEGATE_E2E_FRONT says,
    stopped when the generator is closed: the body of a module fixture parametrised by front."""
    data = copy.deepcopy(extra or {})
    data.setdefault("services", {}).update(FRONT_SERVICES[front])
    s = Stack(workdir, openai_url, anthropic_url, extra=data)
    s.start()
    try:
        yield s
    finally:
        s.stop()

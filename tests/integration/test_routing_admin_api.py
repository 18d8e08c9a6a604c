"""The routing document through the admin API (`/admin/v1/routing`, `/models`, `/providers`,
`/prices`, history, versions, rollback) and the CLI (`sidegate models|providers|prices|routing`),
as live processes against a real Valkey: every change one validated, audited version."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import controlplane_helpers as h

from sidegate import routingstore as rs
from sidegate.admin.audit import AUDIT_STREAM
from sidegate.ports import free_port, wait_for_port
from sidegate.store.redispy import client

valkey_url = h.valkey_url
SECRET = "sk-live-abcdefghijklmnopqrstuvwxyz012345"
CONFIG = {
    "providers": {
        "openai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "OPENAI_API_KEY"},
        "anthropic": {
            "api": "anthropic",
            "base_url": "http://127.0.0.1:9",
            "api_key_env": "ANTHROPIC_API_KEY",
        },
    },
    "models": {"gpt-4o": {"routes": [{"provider": "openai"}, {"provider": "anthropic", "model": "claude"}]}},
    "quota": {"prices": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10}}},
}


@dataclass
class Srv:
    base: str
    log_path: str
    config: str
    url: str

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.base}/admin/v1", headers={"Authorization": f"Bearer {h.ADMIN_TOKEN}"},
                            timeout=10)  # fmt: skip

    def log(self) -> str:
        return Path(self.log_path).read_text()


@pytest.fixture(scope="module")
def srv(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    cfg = tmp_path_factory.mktemp("routing-api") / "sidegate.yaml"
    cfg.write_text(json.dumps(CONFIG))
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="sidegate-admin-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "sidegate.admin.cli", "admin", "serve", "--port", str(port), "-c", str(cfg)]
    proc = subprocess.Popen(cmd, env=h.cli_env(valkey_url, SIDEGATE_ADMIN_TOKEN=h.ADMIN_TOKEN), stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc)
        yield Srv(f"http://127.0.0.1:{port}", log.name, str(cfg), valkey_url)
    finally:
        h._stop(proc)
        log.close()
        os.unlink(log.name)


def _store(url: str, fn: Any) -> Any:
    async def main() -> Any:
        r = client(url, 2.0)
        try:
            return await fn(r)
        finally:
            await r.aclose()

    return asyncio.run(main())


def _flush(url: str) -> None:
    _store(url, lambda r: r.flushdb())


def _audit(url: str) -> list[dict[str, Any]]:
    async def read(r: Any) -> list[dict[str, Any]]:
        out = []
        for _, f in await r.xrange(AUDIT_STREAM):
            out.append({k.decode(): v.decode() for k, v in f.items()})
        return out

    return _store(url, read)


def _dump_store(url: str) -> str:
    async def dump(r: Any) -> str:
        parts = []
        async for key in r.scan_iter(count=1000):
            kind = (await r.type(key)).decode()
            if kind == "string":
                parts.append(repr(await r.get(key)))
            elif kind == "list":
                parts.append(repr(await r.lrange(key, 0, -1)))
            elif kind == "stream":
                parts.append(repr(await r.xrange(key)))
        return "\n".join(parts)

    return _store(url, dump)


def _cli(srv: Srv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidegate.cli", *args], env=h.cli_env(srv.url), capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_whole_document_entries_history_rollback_and_audit(srv: Srv) -> None:
    _flush(srv.url)
    with srv.http() as c:
        got = c.get("/routing").json()
        assert got["version"] == 0 and set(got["doc"]["providers"]) == {"openai", "anthropic"}
        # one model
        put = c.put(
            "/models/gpt-4o-mini", json={"routes": [{"provider": "openai"}], "policy": {"kind": "cost"}}
        )
        assert put.status_code == 200 and put.json() == {"version": 1}
        one = c.get("/models/gpt-4o-mini").json()
        assert one["version"] == 1 and one["model"]["policy"] == {"kind": "cost"}
        assert set(c.get("/models").json()["models"]) == {"gpt-4o", "gpt-4o-mini"}
        assert c.get("/models/nope").status_code == 404
        # one provider, then a model using it
        assert c.put("/providers/azure", json={"api": "openai", "base_url": "http://127.0.0.1:9",
                                               "api_key_env": "AZURE_KEY"}).json() == {"version": 2}  # fmt: skip
        assert c.get("/providers/azure").json()["provider"]["api_key_env"] == "AZURE_KEY"
        routes = [{"provider": "openai"}, {"provider": "azure", "model": "gpt-4o-prod", "weight": 10}]
        assert c.put("/models/gpt-4o", json={"routes": routes}).json() == {"version": 3}
        # a provider still routed to is not deleted
        refused = c.delete("/providers/azure")
        assert refused.status_code == 409 and "gpt-4o" in refused.json()["error"]["message"]
        # prices: one, whole, delete
        assert c.put("/prices/gpt-4o-mini", json={"input_per_mtok": 0.15, "output_per_mtok": 0.6}).json() == {
            "version": 4
        }
        assert c.get("/prices").json()["prices"]["gpt-4o-mini"]["input_per_mtok"] == 0.15
        assert c.delete("/prices/gpt-4o-mini").json() == {"version": 5}
        assert c.delete("/prices/gpt-4o-mini").status_code == 404
        table = {"gpt-4o": {"input_per_mtok": 3, "output_per_mtok": 12}}
        assert c.put("/prices", json=table).json() == {"version": 6}
        assert c.get("/prices").json() == {"version": 6, "prices": table}
        # delete a model, then the provider it freed
        assert c.put("/models/gpt-4o", json={"routes": [{"provider": "openai"}]}).json() == {"version": 7}
        assert c.delete("/providers/azure").json() == {"version": 8}
        assert c.delete("/models/gpt-4o-mini").json() == {"version": 9}
        # whole document, with a message and optimistic concurrency
        doc = c.get("/routing").json()["doc"]
        doc["models"]["o3"] = {"routes": [{"provider": "openai"}]}
        assert c.put("/routing", json={"doc": doc, "message": "add o3", "expect_version": 9}).json() == {
            "version": 10
        }
        stale = c.put("/routing", json={"doc": doc, "expect_version": 9})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"
        assert (
            c.put(
                "/models/x", params={"expect_version": 3}, json={"routes": [{"provider": "openai"}]}
            ).status_code
            == 409
        )
        # history and versions
        hist = c.get("/routing/history", params={"limit": 3}).json()["history"]
        assert [e["version"] for e in hist] == [10, 9, 8]
        assert (
            hist[0]["message"] == "add o3"
            and hist[0]["changed"] == ["models.o3"]
            and hist[0]["actor"] == "env"
        )
        assert c.get("/routing/versions/1").json()["doc"]["models"]["gpt-4o-mini"]["policy"] == {
            "kind": "cost"
        }
        assert c.get("/routing/versions/99").status_code == 404
        assert c.get("/routing/versions/zero").status_code == 400
        # rollback: default the version before; then to n
        back = c.post("/routing/rollback")
        assert back.json() == {"version": 11, "to": 9} and "o3" not in c.get("/models").json()["models"]
        assert c.post("/routing/rollback", json={"to": 1}).json() == {"version": 12, "to": 1}
        assert set(c.get("/models").json()["models"]) == {"gpt-4o", "gpt-4o-mini"}
        assert c.post("/routing/rollback", json={"to": 500}).status_code == 404
    # every change has its audit entry, written with the version it made
    entries = _audit(srv.url)
    actions = [e["action"] for e in entries]
    assert actions == ["model.put", "provider.put", "model.put", "prices.put", "prices.put", "prices.put",
                       "model.put", "provider.delete", "model.delete", "routing.put", "routing.rollback",
                       "routing.rollback"]  # fmt: skip
    assert [json.loads(e["after"])["version"] for e in entries] == list(range(1, 13))
    assert entries[0]["target"] == "model:gpt-4o-mini" and entries[0]["actor"] == "env"
    assert json.loads(entries[-1]["after"])["to"] == 1


def test_refusals_name_their_location_and_store_nothing(srv: Srv) -> None:
    _flush(srv.url)
    with srv.http() as c:
        bad = c.put("/models/m", json={"routes": [{"provider": "nope"}]})
        err = bad.json()["error"]
        assert bad.status_code == 400 and err["code"] == "invalid_config"
        assert "models.m.routes.0.provider: unknown provider 'nope'" in err["problems"]
        bad = c.put(
            "/routing", json={"doc": {"providers": {}, "models": {"m": {"routes": []}}, "listener": {}}}
        )
        assert bad.status_code == 400 and any(
            p.startswith("listener:") for p in bad.json()["error"]["problems"]
        )
        bad = c.put("/routing", json={"doc": {"providers": {}, "models": {"m": {"routes": []}}}})
        assert any(p.startswith("models.m.routes") for p in bad.json()["error"]["problems"])
        assert c.put("/prices/m", json={"input_per_mtok": -1, "output_per_mtok": 1}).status_code == 400
        assert c.put("/models/m", content=b"[1]").status_code == 400
        assert c.put("/routing", json={"nodoc": 1}).status_code == 400
        assert c.get("/routing/history", params={"limit": 0}).status_code == 400
        assert c.get("/routing").json()["version"] == 0
        assert c.post("/routing/rollback").status_code == 404  # nothing to roll back to
    assert _audit(srv.url) == []


def test_inline_secrets_are_refused_never_stored_or_logged(srv: Srv) -> None:
    _flush(srv.url)
    with srv.http() as c:
        inline = c.put("/providers/leaky", json={"api": "openai", "base_url": "http://x", "api_key": SECRET})
        assert inline.status_code == 400 and inline.json()["error"]["code"] == "invalid_config"
        assert any(p.startswith("providers.leaky.api_key") for p in inline.json()["error"]["problems"])
        header = c.put("/providers/leaky", json={"api": "openai", "base_url": "http://x",
                                                 "headers": {"Authorization": f"Bearer {SECRET}"}})  # fmt: skip
        assert header.status_code == 400
        assert "providers.leaky.headers.Authorization" in header.json()["error"]["problems"][0]
        doc = {"providers": {**CONFIG["providers"], "x": {"api": "openai", "base_url": "http://x", "api_key": SECRET}},
               "models": CONFIG["models"]}  # fmt: skip
        assert c.put("/routing", json={"doc": doc}).status_code == 400
        for resp in (inline, header):
            assert SECRET not in resp.text
        assert c.get("/routing").json()["version"] == 0
    assert SECRET not in _dump_store(srv.url) and SECRET not in srv.log()


def test_cli(srv: Srv, tmp_path: Path) -> None:
    _flush(srv.url)
    cfg = ["-c", srv.config]
    res = _cli(srv, "models", "set", "gpt-4o", "--route", "openai", "--route", "anthropic:claude:weight=10",
               "--policy", "cost", *cfg)  # fmt: skip
    assert res.returncode == 0, res.stderr
    shown = json.loads(_cli(srv, "models", "show", "gpt-4o", "--json", *cfg).stdout)
    assert shown["model"]["routes"] == [
        {"provider": "openai"},
        {"provider": "anthropic", "model": "claude", "weight": 10},
    ]
    assert shown["model"]["policy"] == {"kind": "cost"} and shown["version"] == 1
    model_file = tmp_path / "model.yaml"
    model_file.write_text(yaml.safe_dump({"routes": [{"provider": "openai"}], "timeout_s": 30}))
    assert _cli(srv, "models", "set", "o3", "-f", str(model_file), *cfg).returncode == 0
    assert "o3: openai" in _cli(srv, "models", "list", *cfg).stdout
    refused = _cli(srv, "models", "set", "bad", "--route", "nope", *cfg)
    assert (
        refused.returncode == 2 and "models.bad.routes.0.provider: unknown provider 'nope'" in refused.stderr
    )
    assert _cli(srv, "providers", "set", "groq", "--api", "openai", "--base-url", "http://127.0.0.1:9",
                "--api-key-env", "GROQ_KEY", *cfg).returncode == 0  # fmt: skip
    assert "groq: openai" in _cli(srv, "providers", "list", *cfg).stdout
    busy = _cli(srv, "providers", "delete", "openai", *cfg)
    assert busy.returncode == 1 and "gpt-4o" in busy.stderr and "o3" in busy.stderr
    assert _cli(srv, "prices", "set", "o3", "--input", "2", "--output", "8", *cfg).returncode == 0
    assert "o3: input_per_mtok=2.0" in _cli(srv, "prices", "list", *cfg).stdout
    assert _cli(srv, "prices", "delete", "o3", *cfg).returncode == 0
    # routing: apply a document (and refuse a bad one), history, diff, rollback
    doc = json.loads(_cli(srv, "routing", "show", "--json", *cfg).stdout)["doc"]
    doc["models"]["mini"] = {"routes": [{"provider": "groq"}]}
    (tmp_path / "doc.yaml").write_text(yaml.safe_dump(doc))
    applied = _cli(srv, "routing", "apply", "-f", str(tmp_path / "doc.yaml"), "-m", "mini", "--json", *cfg)
    assert applied.returncode == 0 and json.loads(applied.stdout) == {"version": 6}
    doc["models"]["worse"] = {"routes": [{"provider": "gone"}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
    bad = _cli(srv, "routing", "apply", "-f", str(tmp_path / "bad.yaml"), *cfg)
    assert bad.returncode == 2 and "models.worse.routes.0.provider: unknown provider 'gone'" in bad.stderr
    assert _cli(srv, "routing", "apply", "-f", srv.config, *cfg).returncode == 0  # a whole config file: v7
    hist = _cli(srv, "routing", "history", "--limit", "2", *cfg).stdout.splitlines()
    assert hist[0].split()[0] == "7" and hist[1].split()[0] == "6" and "(mini)" in hist[1]
    diff = _cli(srv, "routing", "diff", "5", "6", *cfg).stdout
    assert "+ models.mini" in diff
    assert json.loads(_cli(srv, "routing", "diff", "--json", *cfg).stdout)["from"] == 6
    back = _cli(srv, "routing", "rollback", "--to", "6", *cfg)
    assert back.returncode == 0 and "version 8" in back.stdout
    assert "mini" in json.loads(_cli(srv, "models", "list", "--json", *cfg).stdout)["models"]
    actors = {e["actor"] for e in _audit(srv.url)}
    assert len(actors) == 1 and actors.pop().startswith("cli:")
    assert _store(srv.url, rs.version) == 8


def test_concurrent_changes_of_entries_are_all_kept(srv: Srv) -> None:
    """Changes of different entries racing each other: each is re-applied to the version that won
    before it, so none is lost, and each makes its own version and audit entry."""
    from sidegate import config
    from sidegate.admin.controlplane.routing import RoutingPlane

    _flush(srv.url)
    base = config.load(srv.config)

    async def go() -> tuple[list[int], set[str]]:
        clients = [client(srv.url, 5.0) for _ in range(4)]
        try:
            planes = [RoutingPlane(c, base) for c in clients]
            made = await asyncio.gather(
                *(
                    p.put_entry("models", f"m{i}", {"routes": [{"provider": "openai"}]})
                    for i, p in enumerate(planes)
                )
            )
            now = await rs.current(clients[0])
            assert now is not None
            return list(made), set(now.doc["models"])
        finally:
            for c in clients:
                await c.aclose()

    made, models = asyncio.run(go())
    assert sorted(made) == [1, 2, 3, 4] and {"m0", "m1", "m2", "m3", "gpt-4o"} <= models
    assert [json.loads(e["after"])["version"] for e in _audit(srv.url)] == [1, 2, 3, 4]

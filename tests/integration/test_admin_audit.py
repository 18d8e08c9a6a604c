"""Admin tokens, scoped roles and the audit log against a live admin API on a real Valkey: who did
what is recorded with the right actor and source, queryable with filters and within the caller's
scope; tokens delegate, revoke at once, and never show up in the log; the CLI does the same."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import admin_roles_helpers as rh
import controlplane_helpers as h

valkey_url = h.valkey_url
server = rh.server


def _audit(server: rh.Server, cred: str | None = None, **params: Any) -> Any:
    with server.client(cred or f"Bearer {server.env_token}") as c:
        resp = c.get("/audit", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["entries"]


def test_each_change_is_audited_with_actor_and_source(server: rh.Server, valkey_url: str) -> None:
    t = "aud-one"
    admin_tok = server.new_token("tenant_admin", t)
    with server.owner() as c:
        assert c.put(f"/tenants/{t}", json={"limits": {"rpm": 10}}).status_code == 201
        made = c.post("/keys", json={"tenant": t, "models": ["m"]}).json()
        kid = made["record"]["id"]
        rotated = c.post(f"/keys/{kid}/rotate", json={"overlap_s": 5}).json()
        c.post(f"/keys/{rotated['record']['id']}/revoke")
    with server.client(f"Bearer {admin_tok['token']}") as c:
        # The tenant's own ceiling is the owner's; within it, the tenant_admin sets its teams' limits.
        assert c.put(f"/tenants/{t}/limits", json={"rpm": 20}).status_code == 403
        assert c.put(f"/tenants/{t}/teams/ml", json={"limits": {"rpm": 20, "daily_usd": 1.5}}).status_code == 201
    jwt = server.issuer.mint("ops@example.com", "tenant_admin", t)
    with server.client(f"Bearer {jwt}") as c:
        assert c.post("/keys", json={"tenant": t}).status_code == 201
    cli = h.run_cli(valkey_url, "keys", "create", "--tenant", t, "--json")
    assert cli.returncode == 0, cli.stderr

    entries = _audit(server, tenant=t)
    assert [e["action"] for e in reversed(entries)] == [
        "admin_token.create", "tenant.create", "key.create", "key.rotate", "key.revoke", "team.put",
        "key.create", "key.create",
    ]  # fmt: skip
    by_action = {(e["action"], e["actor"]): e for e in entries}
    env = by_action[("tenant.create", "env")]
    assert env["role"] == "owner" and env["source"] == "127.0.0.1" and env["tenant"] == t
    assert env["before"] is None and env["after"]["limits"]["rpm"] == 10
    limits = by_action[("team.put", f"token:{admin_tok['record']['id']}")]
    assert limits["role"] == "tenant_admin" and limits["before"] is None and limits["target"] == f"team:{t}/ml"
    assert limits["after"]["limits"] == {"rpm": 20, "tpm": None, "daily_usd": 1.5, "monthly_usd": None}
    rot = by_action[("key.rotate", "env")]
    assert rot["target"] == f"key:{kid}" and rot["after"]["new"]["id"] == rotated["record"]["id"]
    assert rot["after"]["previous"]["expires_at"] and rot["before"]["expires_at"] is None
    assert ("key.create", "oidc:ops@example.com") in by_action
    cli_entry = next(e for e in entries if e["actor"].startswith("cli:"))
    assert cli_entry["source"] == "local" and cli_entry["role"] == "owner"
    # Never a secret or a hash in the log.
    text = json.dumps(entries)
    assert "sha256:" not in text and made["key"] not in text and rotated["key"] not in text
    assert admin_tok["token"] not in text and admin_tok["token"] not in server.log()


def test_query_filters(server: rh.Server) -> None:
    t = "aud-filter"
    start = time.time()
    with server.owner() as c:
        c.put(f"/tenants/{t}")
        for _ in range(3):
            c.post("/keys", json={"tenant": t})
    end = time.time()
    assert len(_audit(server, tenant=t, action="key.create")) == 3
    assert len(_audit(server, tenant=t, action="key.")) == 3
    assert [e["action"] for e in _audit(server, tenant=t, action="tenant.")] == ["tenant.create"]
    assert _audit(server, tenant=t, actor="nobody") == []
    assert len(_audit(server, tenant=t, since=start - 1, until=end + 1)) == 4
    assert _audit(server, tenant=t, until=start - 5) == []
    with server.owner() as c:
        page = c.get("/audit", params={"tenant": t, "limit": 2}).json()
        assert len(page["entries"]) == 2 and page["more"] is True
        ids = [e["id"] for e in page["entries"]]
        assert ids == sorted(ids, reverse=True)  # newest first
        for bad in ({"limit": 0}, {"since": "yesterday"}, {"tenant": "bad name"}, {"colour": "red"}):
            assert c.get("/audit", params=bad).status_code == 400, bad


def test_scoped_roles_see_their_tenant_only(server: rh.Server) -> None:
    a, b = "aud-scope-a", "aud-scope-b"
    with server.owner() as c:
        for t in (a, b):
            c.post("/keys", json={"tenant": t})
    owner_tok = server.new_token("owner")  # an entry that concerns no single tenant
    for role in ("tenant_admin", "viewer"):
        cred = f"Bearer {server.new_token(role, a)['token']}"
        entries = _audit(server, cred)
        assert entries and {e["tenant"] for e in entries} == {a}, role
        with server.client(cred) as c:
            assert c.get("/audit", params={"tenant": b}).status_code == 403
            keys = c.get("/keys").json()["keys"]
            assert keys and {k["tenant"] for k in keys} == {a}
            assert [t["name"] for t in c.get("/tenants").json()["tenants"]] == [a]
    every = _audit(server, f"Bearer {server.new_token('viewer')['token']}", limit=1000)
    assert {a, b} <= {e["tenant"] for e in every}
    assert any(e["target"] == f"admin_token:{owner_tok['record']['id']}" for e in every)


def test_tokens_delegate_and_revoke_at_once(server: rh.Server) -> None:
    a, b = "tok-a", "tok-b"
    with server.owner() as c:
        c.put(f"/tenants/{a}")
    admin_tok = server.new_token("tenant_admin", a)
    owner_tok = server.new_token("owner")
    cred = f"Bearer {admin_tok['token']}"
    with server.client(cred) as c:
        assert c.get("/whoami").json() == {"id": f"token:{admin_tok['record']['id']}", "role": "tenant_admin",
                                           "tenant": a}  # fmt: skip
        made = c.post("/admin-tokens", json={"role": "viewer", "tenant": a, "name": "dash"})
        assert (
            made.status_code == 201
            and made.json()["record"]["created_by"] == f"token:{admin_tok['record']['id']}"
        )
        viewer = made.json()
        for body in (
            {"role": "tenant_admin", "tenant": a, "name": "x"},  # no equal or higher role
            {"role": "viewer", "tenant": b, "name": "x"},  # another tenant
            {"role": "viewer", "name": "x"},  # every tenant
            {"role": "owner", "name": "x"},
        ):
            assert c.post("/admin-tokens", json=body).status_code == 403, body
        assert c.post(f"/admin-tokens/{owner_tok['record']['id']}/revoke").status_code == 403
        assert c.post(f"/admin-tokens/{admin_tok['record']['id']}/revoke").status_code == 403  # not its own
        listed = c.get("/admin-tokens").json()["tokens"]
        assert {t["tenant"] for t in listed} == {a} and viewer["record"]["id"] in {t["id"] for t in listed}
        assert "sha256:" not in json.dumps(listed)
    vcred = f"Bearer {viewer['token']}"
    with server.client(vcred) as c:
        assert c.get("/whoami").json()["role"] == "viewer"
        assert c.get("/admin-tokens").status_code == 403
        assert c.post("/keys", json={"tenant": a}).status_code == 403
    with server.client(cred) as c:
        assert c.post(f"/admin-tokens/{viewer['record']['id']}/revoke").json()["status"] == "revoked"
    with server.client(vcred) as c:
        assert c.get("/whoami").status_code == 401  # the very next request
    # Deleting the tenant revokes its admin tokens: a tenant created again does not inherit them.
    with server.owner() as c:
        deleted = c.delete(f"/tenants/{a}")
        assert deleted.status_code == 200
        c.put(f"/tenants/{a}")
    with server.client(cred) as c:
        assert c.get("/whoami").status_code == 401
    entry = _audit(server, tenant=a, action="tenant.delete")[0]
    assert admin_tok["record"]["id"] in entry["after"]["revoked_admin_tokens"]
    assert viewer["token"] not in server.log() and admin_tok["token"] not in server.log()


def test_cli_tokens_audit_export_and_trim(valkey_url: str, tmp_path: Path) -> None:
    def ok(*args: str) -> str:
        res = h.run_cli(valkey_url, *args)
        assert res.returncode == 0, res.stderr
        return res.stdout

    made = json.loads(ok("admin", "tokens", "create", "--role", "viewer", "--tenant", "cli-t", "--name", "cli",
                         "--expires-in", "1d", "--json"))  # fmt: skip
    tid = made["record"]["id"]
    assert made["token"].startswith(f"sga_{tid}_") and made["record"]["created_by"].startswith("cli:")
    assert tid in ok("admin", "tokens", "list", "--tenant", "cli-t")
    assert "revoked" in ok("admin", "tokens", "revoke", tid)
    bad = h.run_cli(valkey_url, "admin", "tokens", "create", "--role", "tenant_admin", "--name", "x")
    assert bad.returncode == 1 and "needs a tenant" in bad.stderr

    listed = json.loads(ok("admin", "audit", "--tenant", "cli-t", "--since", "1h", "--json"))["entries"]
    assert [e["action"] for e in listed] == ["admin_token.revoke", "admin_token.create"]
    assert all(e["actor"].startswith("cli:") and e["source"] == "local" for e in listed)
    assert "admin_token.create" in ok("admin", "audit", "--action", "admin_token.", "--limit", "5")

    out = tmp_path / "export.jsonl"
    ok("admin", "audit", "export", "-o", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines and all(r["kind"] == "audit" and r["ts"].endswith("+00:00") for r in lines)
    assert {"id", "actor", "role", "source", "action", "target", "tenant", "before", "after"} <= set(lines[0])
    assert [r["id"] for r in lines] == sorted(r["id"] for r in lines)  # oldest first, like the ledger's
    first = h.run_cli(
        valkey_url, "admin", "audit", "export", "--group", "archive", "-o", str(tmp_path / "g.jsonl")
    )
    again = h.run_cli(
        valkey_url, "admin", "audit", "export", "--group", "archive", "-o", str(tmp_path / "g.jsonl")
    )
    assert f"exported {len(lines)} audit" in first.stderr and "exported 0 audit" in again.stderr
    ledger = subprocess.run(
        [sys.executable, "-m", "sidegate.cli", "usage", "export", "--with-audit", "-o", str(tmp_path / "u.jsonl")],
        env=h.cli_env(valkey_url), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert ledger.returncode == 0 and f"0 records and {len(lines)} audit entries" in ledger.stderr, (
        ledger.stderr
    )
    assert (
        tmp_path / "u.jsonl"
    ).read_text() == out.read_text()  # the ledger's records (none here), then these
    assert "deleted 0" in ok("admin", "audit", "trim", "--before", "2000-01-01")  # nothing that old
    # Everything: the exported entries and the record of the first trim.
    assert f"deleted {len(lines) + 1} " in ok("admin", "audit", "trim", "--before", repr(time.time() + 1))
    # What is left is the record of the last trim.
    left = json.loads(ok("admin", "audit", "--json"))["entries"]
    assert [e["action"] for e in left] == ["audit.trim"] and left[0]["actor"].startswith("cli:")


class _Jwks(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_port() -> Iterator[int]:
    from sidegate.ports import free_port

    yield free_port()


def test_oidc_remote_jwks(valkey_url: str, tmp_path: Path, jwks_port: int) -> None:
    """A JWKS URL that is down at start: 503 naming it; once it answers, the next JWT is accepted."""
    import os

    from sidegate.ports import free_port, wait_for_port

    issuer = rh.Issuer()
    cfg = tmp_path / "sidegate.yaml"
    rh.write_config(cfg, issuer)
    data = json.loads(cfg.read_text())
    url = f"http://127.0.0.1:{jwks_port}/jwks"
    data["admin"]["oidc"] = issuer.config(jwks_url=url, jwks_min_refresh_s=0, jwks_timeout_s=1)
    cfg.write_text(json.dumps(data))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidegate.admin.cli", "admin", "serve", "--port", str(port), "-c", str(cfg)],
        env=h.cli_env(valkey_url, SIDEGATE_ADMIN_TOKEN=h.ADMIN_TOKEN),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    httpd: ThreadingHTTPServer | None = None
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc)
        srv = rh.Server(f"http://127.0.0.1:{port}", h.ADMIN_TOKEN, issuer, os.devnull, str(cfg))
        with srv.client(f"Bearer {issuer.mint('z', 'viewer')}") as c:
            down = c.get("/whoami")
            assert down.status_code == 503 and down.json()["error"]["code"] == "oidc_unavailable"
            assert url in down.json()["error"]["message"]
        _Jwks.body = json.dumps(issuer.jwks()).encode()
        httpd = ThreadingHTTPServer(("127.0.0.1", jwks_port), _Jwks)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        with srv.client(f"Bearer {issuer.mint('z', 'viewer')}") as c:
            assert c.get("/whoami").json() == {"id": "oidc:z", "role": "viewer", "tenant": None}
        with srv.client(f"Bearer {rh.Issuer().mint('z', 'owner')}") as c:
            assert c.get("/whoami").status_code == 401  # another key under a known kid
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        h._stop(proc)

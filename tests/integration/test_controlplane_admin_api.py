"""The admin HTTP API and the control-plane CLI, as live processes against a real Valkey."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import controlplane_helpers as h

from sidegate import keys, keystore
from sidegate.admin.openapi import spec, spec_json
from sidegate.ports import free_port, wait_for_port
from sidegate.store.redispy import client

valkey_url = h.valkey_url
admin = h.admin
DOCS = Path(__file__).resolve().parents[2] / "docs" / "admin-openapi.json"


def _http(a: h.Admin, token: str | None = "right") -> httpx.Client:
    headers = a.headers() if token == "right" else ({"Authorization": token} if token else {})
    return httpx.Client(base_url=f"{a.base}/admin/v1", headers=headers, timeout=10)


def _records(url: str) -> dict[str, keystore.KeyRecord]:
    async def load() -> dict[str, keystore.KeyRecord]:
        r = client(url, 2.0)
        try:
            return (await keystore.load_all(r))[1]
        finally:
            await r.aclose()

    return asyncio.run(load())


def _is_error(resp: httpx.Response, status: int) -> bool:
    body = resp.json()
    return (
        resp.status_code == status
        and resp.headers["content-type"].startswith("application/json")
        and set(body["error"]) == {"code", "message"}
    )


def test_openapi_served_matches_committed(admin: h.Admin) -> None:
    with _http(admin, None) as c:
        served = c.get("/openapi.json").json()
    assert served == spec() == json.loads(DOCS.read_text())
    assert DOCS.read_text() == spec_json(), (
        "regenerate: python -m sidegate.admin.openapi > docs/admin-openapi.json"
    )


def test_token_required(admin: h.Admin) -> None:
    with _http(admin, None) as c:
        assert c.get("/healthz").json() == {"status": "ok", "store": "ok"}  # public
        resp = c.get("/keys")
        assert _is_error(resp, 401) and resp.headers["www-authenticate"] == "Bearer"
        assert _is_error(c.post("/keys", json={"tenant": "acme"}), 401)
        assert _is_error(c.get("/nope"), 401)  # route existence is not revealed either
    for bad in ("Bearer wrong-token", f"Basic {admin.token}", f"Bearer {admin.token}x", "Bearer"):
        with _http(admin, bad) as c:
            assert _is_error(c.get("/tenants"), 401), bad
    with _http(admin) as c:
        assert c.get("/tenants").status_code == 200


def test_key_lifecycle(admin: h.Admin, valkey_url: str) -> None:
    with _http(admin) as c:
        resp = c.post("/keys", json={"tenant": "acme", "models": ["gpt-4o-mini"]})
        assert resp.status_code == 201 and resp.headers["cache-control"] == "no-store"
        key, rec = resp.json()["key"], resp.json()["record"]
        assert (
            keys.key_id(key) == rec["id"] and rec["status"] == "active" and rec["models"] == ["gpt-4o-mini"]
        )
        assert keys.verify(key, _records(valkey_url)[rec["id"]].hash)
        listed = c.get("/keys", params={"tenant": "acme"}).json()["keys"]
        assert rec["id"] in [k["id"] for k in listed]
        assert "sha256:" not in c.get("/keys").text and key not in c.get(f"/keys/{rec['id']}").text

        rot = c.post(f"/keys/{rec['id']}/rotate", json={"overlap_s": 60})
        assert rot.status_code == 201
        new_key, prev = rot.json()["key"], rot.json()["previous"]
        assert prev["id"] == rec["id"] and prev["expires_at"] and rot.json()["record"]["tenant"] == "acme"
        assert keys.verify(new_key, _records(valkey_url)[rot.json()["record"]["id"]].hash)

        revoked = c.post(f"/keys/{rec['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        assert _is_error(c.post(f"/keys/{rec['id']}/rotate"), 409)
        assert _is_error(c.post("/keys/zzzzzzzz/revoke"), 404)
        assert _is_error(c.get("/keys/zzzzzzzz"), 404)
    assert key.split("_", 2)[2] not in admin.log() and new_key not in admin.log()
    assert admin.token not in admin.log()


def test_tenants(admin: h.Admin) -> None:
    with _http(admin) as c:
        assert c.put("/tenants/globex").status_code == 201
        assert c.put("/tenants/globex").status_code == 200
        resp = c.put("/tenants/globex/limits", json={"rpm": 60, "daily_usd": 5})
        assert resp.status_code == 200
        assert resp.json()["limits"] == {"rpm": 60, "tpm": None, "daily_usd": 5.0, "monthly_usd": None}
        assert c.get("/tenants/globex").json()["limits"]["rpm"] == 60
        put = c.put("/tenants/globex", json={"limits": {"tpm": 1000}})
        assert put.json()["limits"] == {"rpm": None, "tpm": 1000, "daily_usd": None, "monthly_usd": None}
        assert "globex" in [t["name"] for t in c.get("/tenants").json()["tenants"]]
        form = {"content-type": "application/x-www-form-urlencoded"}  # plain `curl -d` works too
        assert (
            c.put("/tenants/globex/limits", content=b'{"rpm": 7}', headers=form).json()["limits"]["rpm"] == 7
        )
        c.post("/keys", json={"tenant": "globex"})
        assert c.delete("/tenants/globex").json() == {"name": "globex", "revoked_keys": 1}
        assert _is_error(c.get("/tenants/globex"), 404)
        assert _is_error(c.delete("/tenants/globex"), 404)
        assert _is_error(c.put("/tenants/globex/limits", json={}), 404)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/keys", b"{not json"),
        ("POST", "/keys", b"[1, 2]"),
        ("POST", "/keys", b""),
        ("POST", "/keys", b"{}"),
        ("POST", "/keys", b'{"tenant": 5}'),
        ("POST", "/keys", b'{"tenant": "bad name!"}'),
        ("POST", "/keys", b'{"tenant": "acme", "models": "gpt-4o"}'),
        ("POST", "/keys", b'{"tenant": "acme", "models": []}'),
        ("POST", "/keys", b'{"tenant": "acme", "expires_at": "tomorrow"}'),
        ("POST", "/keys", b'{"tenant": "acme", "hash": "sha256:00"}'),
        ("POST", "/keys/zzzzzzzz/rotate", b'{"overlap_s": -5}'),
        ("POST", "/keys/zzzzzzzz/rotate", b'{"overlap_s": true}'),
        ("POST", "/keys/NOT_AN_ID/revoke", b""),
        ("GET", "/keys?tenant=no%20spaces", b""),
        ("PUT", "/tenants/acme/limits", b'{"rpm": 1.5}'),
        ("PUT", "/tenants/acme/limits", b'{"rpm": -1}'),
        ("PUT", "/tenants/acme/limits", b'{"burst": 3}'),
        ("PUT", "/tenants/acme", b'{"limits": 3}'),
        ("PUT", "/tenants/-bad", b""),
    ],
)
def test_bad_input_is_400_json(admin: h.Admin, method: str, path: str, body: bytes) -> None:
    with _http(admin) as c:
        resp = c.request(method, path, content=body, headers={"content-type": "application/json"})
    assert _is_error(resp, 400), resp.text


def test_http_errors_are_json(admin: h.Admin) -> None:
    with _http(admin) as c:
        assert _is_error(c.get("/nothing-here"), 404)
        resp = c.delete("/keys")
        assert _is_error(resp, 405) and "POST" in resp.headers["allow"]
        assert _is_error(c.post("/keys", content=b"{" + b" " * 100_000 + b"}"), 413)


def test_refuses_to_start_without_token(valkey_url: str) -> None:
    res = h.run_cli(valkey_url, "admin", "serve", "--port", str(free_port()))
    assert res.returncode == 2 and "SIDEGATE_ADMIN_TOKEN" in res.stderr


def test_insecure_no_auth_is_explicit(valkey_url: str) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "sidegate.admin.cli",
        "admin",
        "serve",
        "--port",
        str(port),
        "--insecure-no-auth",
    ]
    proc = subprocess.Popen(cmd, env=h.cli_env(valkey_url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc)
        assert httpx.get(f"http://127.0.0.1:{port}/admin/v1/tenants", timeout=10).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert b"WITHOUT authentication" in err


def test_store_down_is_503_json() -> None:
    port, dead = free_port(), f"redis://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "sidegate.admin.cli", "admin", "serve", "--port", str(port)]
    env = h.cli_env(dead, SIDEGATE_ADMIN_TOKEN=h.ADMIN_TOKEN)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc)
        a = h.Admin(f"http://127.0.0.1:{port}", h.ADMIN_TOKEN, "")
        with _http(a) as c:
            assert c.get("/healthz").status_code == 503
            assert _is_error(c.get("/keys"), 503)
            assert _is_error(c.post("/keys", json={"tenant": "acme"}), 503)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_commands(valkey_url: str) -> None:
    def ok(*args: str) -> str:
        res = h.run_cli(valkey_url, *args)
        assert res.returncode == 0, res.stderr
        return res.stdout

    created = json.loads(
        ok("keys", "create", "--tenant", "umbrella", "--model", "gpt-4o", "--expires-in", "7d", "--json")
    )
    kid = created["record"]["id"]
    assert keys.verify(created["key"], _records(valkey_url)[kid].hash) and created["record"]["expires_at"]
    assert kid in ok("keys", "list", "--tenant", "umbrella")
    rotated = json.loads(ok("keys", "rotate", kid, "--overlap", "10m", "--json"))
    assert rotated["previous"]["id"] == kid and rotated["record"]["models"] == ["gpt-4o"]
    assert "revoked" in ok("keys", "revoke", rotated["record"]["id"])
    ok("tenants", "create", "umbrella", "--rpm", "30")
    limits = json.loads(ok("tenants", "limits", "umbrella", "--tpm", "900", "--json"))["limits"]
    assert limits == {"rpm": 30, "tpm": 900, "daily_usd": None, "monthly_usd": None}  # CLI merges flags
    limits = json.loads(ok("tenants", "limits", "umbrella", "--rpm", "none", "--json"))["limits"]
    assert limits["rpm"] is None and limits["tpm"] == 900
    assert "umbrella" in ok("tenants", "list")
    assert "revoked 1 key" in ok("tenants", "delete", "umbrella")
    bad = h.run_cli(valkey_url, "keys", "revoke", "zzzzzzzz")
    assert bad.returncode == 1 and "no key" in bad.stderr
    no_store = subprocess.run(
        [sys.executable, "-m", "sidegate.admin.cli", "keys", "list"],
        env={k: v for k, v in h.cli_env(valkey_url).items() if k != "SIDEGATE_REDIS_URL"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert no_store.returncode != 0 and "SIDEGATE_REDIS_URL" in no_store.stderr

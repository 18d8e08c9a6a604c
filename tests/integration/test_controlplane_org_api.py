"""The team and user endpoints of the admin API and the `sidegate teams|users` commands, as live
processes against a real Valkey."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import controlplane_helpers as h

valkey_url = h.valkey_url
admin = h.admin


def _http(a: h.Admin) -> httpx.Client:
    return httpx.Client(base_url=f"{a.base}/admin/v1", headers=a.headers(), timeout=10)


def _err(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


def test_teams_users_endpoints(admin: h.Admin) -> None:
    with _http(admin) as c:
        assert c.put("/tenants/org-api").status_code in (200, 201)
        assert (
            _err(c.put("/tenants/nope-org/teams/ml", json={}), 404, "not_found") == "no tenant named nope-org"
        )
        r = c.put(
            "/tenants/org-api/teams/ml", json={"limits": {"daily_usd": 2, "rpm": 50}, "models": ["gpt-4o"]}
        )
        assert r.status_code == 201
        assert r.json() == {
            "tenant": "org-api", "team": "ml", "models": ["gpt-4o"], "users": [], "active_keys": 0,
            "limits": {"rpm": 50, "tpm": None, "daily_usd": 2.0, "monthly_usd": None},
        }  # fmt: skip
        assert c.put("/tenants/org-api/teams/ml", json={"models": ["*"]}).status_code == 200  # replaced
        assert c.get("/tenants/org-api/teams/ml").json()["limits"]["rpm"] is None
        assert "unknown field" in _err(
            c.put("/tenants/org-api/teams/ml", json={"colour": 1}), 400, "invalid_request"
        )
        assert "limits must be an object" in _err(
            c.put("/tenants/org-api/teams/ml", json={"limits": None}), 400, "invalid_request"
        )
        assert _err(c.put("/tenants/org-api/users/ada", json={"team": "ops"}), 404, "not_found")
        r = c.put("/tenants/org-api/users/ada", json={"team": "ml", "limits": {"rpm": 3}, "models": ["o3"]})
        assert r.status_code == 201 and r.json()["team"] == "ml" and r.json()["user"] == "ada"
        assert [u["user"] for u in c.get("/tenants/org-api/users").json()["users"]] == ["ada"]
        assert c.get("/tenants/org-api/teams").json()["teams"][0]["users"] == ["ada"]
        _err(c.get("/tenants/org-api/users/bob"), 404, "not_found")
        _err(c.get("/tenants/org-api/teams/bad%20name"), 400, "invalid_request")

        r = c.post("/keys", json={"tenant": "org-api", "user": "ada"})
        assert (
            r.status_code == 201
            and r.json()["record"]["user"] == "ada"
            and r.json()["record"]["team"] is None
        )
        kid = r.json()["record"]["id"]
        assert c.get(f"/keys/{kid}").json()["user"] == "ada"
        assert "no user bob" in _err(
            c.post("/keys", json={"tenant": "org-api", "user": "bob"}), 404, "not_found"
        )
        c.put("/tenants/org-api/users/bob", json={})
        assert "not in team" in _err(
            c.post("/keys", json={"tenant": "org-api", "team": "ml", "user": "bob"}), 400, "invalid_request"
        )
        r = c.post(f"/keys/{kid}/rotate", json={"overlap_s": 0})
        assert r.json()["record"]["user"] == "ada"

        assert "still has users" in _err(c.delete("/tenants/org-api/teams/ml"), 409, "conflict")
        r = c.delete("/tenants/org-api/users/ada")
        # the rotated key expired at once (overlap 0): only the new one was still usable
        assert r.json() == {"tenant": "org-api", "user": "ada", "existed": True, "revoked_keys": 1}
        assert c.delete("/tenants/org-api/users/ada").json()["existed"] is False
        assert c.delete("/tenants/org-api/teams/ml").json() == {
            "tenant": "org-api", "team": "ml", "existed": True, "revoked_keys": 0
        }  # fmt: skip


def _sidegate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`sidegate ARGS` (the main CLI, where the teams and users commands are wired)."""
    return subprocess.run([sys.executable, "-m", "sidegate.cli", *args], env=h.cli_env(url), capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def test_teams_users_cli(valkey_url: str) -> None:
    def cli(*args: str) -> str:
        res = _sidegate(valkey_url, *args)
        assert res.returncode == 0, res.stderr
        return res.stdout

    cli("tenants", "create", "org-cli")
    assert "no tenant named nope" in _sidegate(valkey_url, "teams", "set", "nope", "ml").stderr
    out = json.loads(cli("teams", "set", "org-cli", "ml", "--daily-usd", "5", "--model", "gpt-4o", "--json"))
    assert out["limits"]["daily_usd"] == 5 and out["models"] == ["gpt-4o"]
    out = json.loads(cli("teams", "set", "org-cli", "ml", "--rpm", "9", "--json"))  # the rest is kept
    assert out["limits"]["daily_usd"] == 5 and out["limits"]["rpm"] == 9 and out["models"] == ["gpt-4o"]
    cli("users", "set", "org-cli", "ada", "--team", "ml", "--rpm", "2")
    assert "ada: team=ml models=* keys=0; limits: rpm=2" in cli("users", "list", "org-cli")
    created = json.loads(cli("keys", "create", "--tenant", "org-cli", "--user", "ada", "--json"))
    assert created["record"]["user"] == "ada"
    text = _sidegate(valkey_url, "keys", "create", "--tenant", "org-cli", "--team", "ml")
    assert "team:    ml" in text.stdout
    out = json.loads(cli("users", "set", "org-cli", "ada", "--no-team", "--json"))
    assert out["team"] is None and out["limits"]["rpm"] == 2
    assert "users=-" in cli("teams", "show", "org-cli", "ml")
    assert "revoked 1 key(s)" in cli("users", "delete", "org-cli", "ada")
    assert "revoked 1 key(s)" in cli("teams", "delete", "org-cli", "ml")
    res = _sidegate(valkey_url, "teams", "delete", "org-cli", "ml")
    assert res.returncode == 1 and "no team ml in tenant org-cli" in res.stderr

"""Teams and users through the control plane against a real Valkey, seen by authz's KeyCache and the
quota feature's live limits like a gateway replica; the start-up seed from the YAML."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import controlplane_helpers as h

from sidegate import config, keystore
from sidegate.admin import controlplane as cp
from sidegate.admin.audit import AUDIT_STREAM
from sidegate.admin.principal import OWNER_ENV
from sidegate.features.auth.decide import Allow, decide
from sidegate.features.auth.keycache import KeyCache
from sidegate.features.quota import Limits
from sidegate.features.quota.tenants import TenantQuotas, seed
from sidegate.keystore import TenantLimits

valkey_url = h.valkey_url
CFG = config.parse(
    {
        "providers": {"oai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "K"}},
        "models": {"gpt-4o": {"routes": [{"provider": "oai"}]}},
    },
    env={},
)

run, _req = h.run, h.gateway_request


async def _audit(c: cp.ControlPlane) -> list[dict[str, Any]]:
    out = []
    for _, fields in await c.redis.xrange(AUDIT_STREAM):
        e = {k.decode(): v.decode() for k, v in fields.items()}
        out.append({**e, "before": orjson.loads(e["before"]), "after": orjson.loads(e["after"])})
    return out


def test_teams_users_keys_live(valkey_url: str) -> None:
    async def body(c: cp.ControlPlane) -> None:
        cache, quotas = KeyCache(c.redis), TenantQuotas(CFG, c.redis)
        await c.create_tenant("acme", TenantLimits(rpm=1000))
        with pytest.raises(cp.NotFound):
            await c.put_team("globex", "ml")
        team, created = await c.put_team("acme", "ml", TenantLimits(daily_usd=2.5), ["gpt-4o", "o3"])
        assert created and team.to_dict() == {
            "tenant": "acme", "team": "ml", "models": ["gpt-4o", "o3"], "users": [], "active_keys": 0,
            "limits": {"rpm": None, "tpm": None, "daily_usd": 2.5, "monthly_usd": None},
        }  # fmt: skip
        with pytest.raises(cp.NotFound, match="no team ops"):
            await c.put_user("acme", "ada", team="ops")
        user, created = await c.put_user("acme", "ada", "ml", TenantLimits(rpm=3), ["o3", "claude"])
        assert created and user.to_dict()["team"] == "ml"
        await c.put_user("acme", "bob")
        assert [u.record.name for u in await c.list_users("acme")] == ["ada", "bob"]
        assert (await c.get_team("acme", "ml")).users == ("ada",)

        with pytest.raises(cp.Invalid, match="not in team"):
            await c.create_key("acme", team="ml", user="bob")
        with pytest.raises(cp.NotFound, match="no user eve"):
            await c.create_key("acme", user="eve")
        team_key, tk = await c.create_key("acme", ["*"], team="ml")
        user_key, uk = await c.create_key("acme", ["*"], team="ml", user="ada")
        assert (tk.team, tk.user, uk.team, uk.user) == ("ml", "", "", "ada")  # a user key stores the user
        assert (await c.get_key(uk.id)).to_dict()["user"] == "ada"

        await cache.refresh()
        await quotas.refresh()
        a = decide(_req(team_key), cache.records)
        b = decide(_req(user_key), cache.records)
        assert isinstance(a, Allow) and (a.team, a.user, a.models) == ("ml", "", ("gpt-4o", "o3"))
        assert isinstance(b, Allow) and (b.team, b.user, b.models) == ("ml", "ada", ("o3",))
        assert quotas.team("acme", "ml") == Limits(daily_usd=2.5) and quotas.user("acme", "ada") == Limits(
            rpm=3
        )

        # a change to the team reaches the cache on its next poll (config version), keys unchanged
        await c.put_team("acme", "ml", TenantLimits(tpm=50), ["*"])
        await cache.refresh()
        await quotas.refresh()
        b = decide(_req(user_key), cache.records)
        assert isinstance(b, Allow) and b.models == ("o3", "claude")
        assert quotas.team("acme", "ml") == Limits(tpm=50)
        # moving the user moves its keys
        await c.put_team("acme", "ops")
        await c.put_user("acme", "ada", "ops", None, ["*"])
        await cache.refresh()
        b = decide(_req(user_key), cache.records)
        assert isinstance(b, Allow) and (b.team, b.models) == ("ops", ("*",))

        rot = await c.rotate_key(uk.id)
        assert (rot.new.user, rot.new.team) == ("ada", "")
        with pytest.raises(cp.Conflict, match="still has users"):
            await c.delete_team("acme", "ops")
        assert await c.delete_user("acme", "ada") == 2  # the user's key and its rotation
        assert await c.delete_team("acme", "ops") == 0
        assert await c.delete_team("acme", "ml") == 1
        assert await c.delete_team("acme", "ml") is None  # not there: nothing done, not an error
        assert await c.delete_user("globex", "ada") is None
        with pytest.raises(cp.NotFound):
            await c.get_team("acme", "ml")
        await cache.refresh()
        assert decide(_req(team_key), cache.records).reason == "revoked_key"  # type: ignore[union-attr]

        # (the tenant's and the keys' own entries are in the log too: sidegate/admin/controlplane/operations.py)
        log = [e for e in await _audit(c) if e["action"].split(".")[0] in ("team", "user")]
        assert [(e["action"], e["target"]) for e in log][:2] == [
            ("team.put", "team:acme/ml"),
            ("user.put", "user:acme/ada"),
        ]
        assert log[0]["before"] is None and log[0]["after"]["limits"]["daily_usd"] == 2.5
        deleted = [e for e in log if e["action"] == "team.delete" and e["target"] == "team:acme/ml"]
        assert deleted[0]["before"]["revoked_keys"] == [tk.id] and deleted[0]["after"] is None
        assert {e["actor"] for e in log} == {OWNER_ENV.id}

        # deleting the tenant forgets its teams and users
        await c.put_team("acme", "ml")
        await c.put_user("acme", "cy", "ml")
        await c.delete_tenant("acme")
        assert not await c.redis.keys("{sg}:team*") and not await c.redis.keys("{sg}:user*")

    run(valkey_url, body)


def test_seed_from_config(valkey_url: str) -> None:
    cfg = config.parse(
        {
            **CFG.model_dump(mode="json", include={"providers", "models"}),
            "tenants": {
                "acme": {
                    "quota": {"limits": {"rpm": 100}},
                    "teams": {"ml": {"limits": {"daily_usd": 1}, "models": ["gpt-4o"]}},
                    "users": {"ada": {"team": "ml", "limits": {"rpm": 2}}},
                    "keys": [{"id": "k1aaaaaa", "hash": "sha256:" + "0" * 64, "user": "ada"}],
                }
            },
        },
        env={},
    )

    async def body(c: cp.ControlPlane) -> None:
        v0 = int(await c.redis.get(keystore.CONFIG_VERSION) or 0)
        await keystore.seed(c.redis, cfg)
        await seed(c.redis, cfg)
        assert int(await c.redis.get(keystore.CONFIG_VERSION) or 0) == v0 + 1
        ada = await c.get_user("acme", "ada")
        assert ada.record.team == "ml" and ada.record.limits == TenantLimits(rpm=2) and ada.keys == 1
        assert (await c.get_team("acme", "ml")).record.models == ("gpt-4o",)
        cache = KeyCache(c.redis)
        await cache.refresh()
        rec = cache.records["k1aaaaaa"]
        assert (rec.team, rec.user, rec.models) == ("ml", "ada", ("gpt-4o",))

    run(valkey_url, body)

"""Teams and users: config references, request scopes, the allow-list key ∩ team ∩ user, key resolution."""

from __future__ import annotations

from typing import Any

import pytest

from sidegate import config, keys, keystore
from sidegate.config.quota import Limits, TenantQuota, build_scopes
from sidegate.features.auth.decide import Allow, decide
from sidegate.keystore import KeyRecord, TenantLimits
from sidegate.orgstore import Org, TeamRecord, UserRecord, intersect

BASE: dict[str, Any] = {
    "providers": {"oai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "K"}},
    "models": {"gpt-4o": {"routes": [{"provider": "oai"}]}},
}
HASH = "sha256:" + "0" * 64


def _tenant(**tenant: Any) -> dict[str, Any]:
    return {**BASE, "tenants": {"acme": tenant}}


def _problem(data: dict[str, Any]) -> str:
    with pytest.raises(config.ConfigError) as exc:
        config.parse(data, env={})
    return str(exc.value)


def test_config_teams_users_and_keys_parse() -> None:
    cfg = config.parse(
        _tenant(
            teams={"ml": {"limits": {"daily_usd": 5}, "models": ["gpt-4o"]}},
            users={"ada": {"team": "ml", "limits": {"rpm": 3}}, "bob": {}},
            keys=[
                {"id": "k1aaaaaa", "hash": HASH, "team": "ml"},
                {"id": "k2aaaaaa", "hash": HASH, "user": "ada", "team": "ml"},
                {"id": "k3aaaaaa", "hash": HASH, "user": "bob"},
            ],
        ),
        env={},
    )
    t = cfg.tenants["acme"]
    assert (
        t.teams["ml"].limits.daily_usd == 5 and t.users["ada"].team == "ml" and t.users["bob"].models == ["*"]
    )
    recs = {r.id: r for r in keystore.records_from_config(cfg)}
    # a user's key stores the user alone: its team is read live from the user
    assert (recs["k1aaaaaa"].team, recs["k1aaaaaa"].user) == ("ml", "")
    assert (recs["k2aaaaaa"].team, recs["k2aaaaaa"].user) == ("", "ada")
    assert (recs["k3aaaaaa"].team, recs["k3aaaaaa"].user) == ("", "bob")


@pytest.mark.parametrize(
    ("tenant", "message"),
    [
        (
            {"keys": [{"id": "k1aaaaaa", "hash": HASH, "team": "nope"}]},
            "tenants.acme.keys.k1aaaaaa.team: unknown team",
        ),
        (
            {"keys": [{"id": "k1aaaaaa", "hash": HASH, "user": "nope"}]},
            "tenants.acme.keys.k1aaaaaa.user: unknown user",
        ),
        ({"users": {"ada": {"team": "nope"}}}, "tenants.acme.users.ada.team: unknown team 'nope'"),
        (
            {
                "teams": {"ml": {}, "ops": {}},
                "users": {"ada": {"team": "ml"}},
                "keys": [{"id": "k1aaaaaa", "hash": HASH, "team": "ops", "user": "ada"}],
            },
            "user 'ada' is not in team 'ops' (its team: ml)",
        ),
        (
            {
                "teams": {"ml": {}},
                "users": {"ada": {}},
                "keys": [{"id": "k1aaaaaa", "hash": HASH, "team": "ml", "user": "ada"}],
            },
            "user 'ada' is not in team 'ml' (its team: none)",
        ),
        ({"teams": {"bad name": {}}}, "team/user name 'bad name' must match"),
        ({"teams": {"ml": {"limits": {"rpm": -1}}}}, "tenants.acme.teams.ml.limits.rpm"),
        ({"users": {"ada": {"colour": "red"}}}, "tenants.acme.users.ada.colour"),
    ],
)
def test_config_refuses_bad_references(tenant: dict[str, Any], message: str) -> None:
    assert message in _problem(_tenant(**tenant))


def test_scopes_every_level_present_even_unlimited() -> None:
    q = TenantQuota(limits=Limits(rpm=100), keys={"k1": Limits(rpm=9)})
    scopes = build_scopes("acme", q, key_id="k1", model="gpt-4o", team="ml", team_limits=Limits(daily_usd=1.5),
                          user="ada")  # fmt: skip
    assert [(s.name, s.limits) for s in scopes] == [
        ("tenant:acme", Limits(rpm=100)),
        ("team:acme/ml", Limits(daily_usd=1.5)),
        ("user:acme/ada", Limits()),  # no limits: still recorded (usage and spend per user)
        ("key:k1", Limits(rpm=9)),
    ]
    assert [s.name for s in build_scopes("acme", q, key_id="k2")] == ["tenant:acme"]


@pytest.mark.parametrize(
    ("a", "b", "out"),
    [
        (("*",), ("*",), ("*",)),
        (("*",), ("gpt-4o",), ("gpt-4o",)),
        (("gpt-4o", "o3"), ("*",), ("gpt-4o", "o3")),
        (("gpt-4o", "o3"), ("o3", "claude"), ("o3",)),
        (("gpt-4o",), ("o3",), ()),
    ],
)
def test_intersect_respects_wildcard(a: tuple[str, ...], b: tuple[str, ...], out: tuple[str, ...]) -> None:
    assert intersect(a, b) == out


def _org() -> Org:
    return Org(
        teams={("acme", "ml"): TeamRecord("acme", "ml", TenantLimits(rpm=5), ("gpt-4o", "o3", "claude"))},
        users={
            ("acme", "ada"): UserRecord("acme", "ada", "ml", models=("o3", "claude", "gemini")),
            ("acme", "bob"): UserRecord("acme", "bob"),
        },
    )


def test_resolve_key_team_user() -> None:
    org = _org()
    plain = KeyRecord("k0", "acme", HASH)
    assert org.resolve(plain) is plain
    team_key = KeyRecord("k1", "acme", HASH, models=("gpt-4o", "gemini"), team="ml")
    assert (org.resolve(team_key).team, org.resolve(team_key).models) == ("ml", ("gpt-4o",))
    user_key = KeyRecord("k2", "acme", HASH, models=("*",), user="ada")
    r = org.resolve(user_key)  # the user's team comes with the user: key ∩ team ∩ user
    assert (r.team, r.user, r.models) == ("ml", "ada", ("o3", "claude"))
    both = KeyRecord("k3", "acme", HASH, models=("claude",), team="ml", user="ada")
    assert org.resolve(both).models == ("claude",)
    loner = org.resolve(KeyRecord("k4", "acme", HASH, user="bob"))
    assert (loner.team, loner.user, loner.models) == ("", "bob", ("*",))


@pytest.mark.parametrize(
    "rec",
    [
        KeyRecord("k5", "acme", HASH, team="gone"),
        KeyRecord("k6", "acme", HASH, user="gone"),
        KeyRecord("k7", "acme", HASH, team="ml", user="bob"),  # bob is in no team
        KeyRecord("k8", "globex", HASH, team="ml"),  # ml is acme's, not globex's
    ],
)
def test_resolve_dangling_reference_refuses_every_model(rec: KeyRecord) -> None:
    assert _org().resolve(rec).models == ()


def test_decide_carries_resolved_identity() -> None:
    plaintext, kid = keys.new_key()
    rec = _org().resolve(KeyRecord(kid, "acme", keys.hash_key(plaintext), user="ada"))
    out = decide({":path": "/v1/chat/completions", "authorization": f"Bearer {plaintext}"}, {kid: rec})
    assert isinstance(out, Allow)
    assert (out.tenant, out.team, out.user, out.models) == ("acme", "ml", "ada", ("o3", "claude"))


def test_resolve_all_matches_resolve() -> None:
    org = _org()
    recs = {
        r.id: r
        for r in (
            KeyRecord("k0", "acme", HASH),
            KeyRecord("k1", "acme", HASH, models=("gpt-4o", "gemini"), team="ml"),
            KeyRecord("k2", "acme", HASH, user="ada"),
            KeyRecord("k2b", "acme", HASH, user="ada", revoked=True, expires_at=5.0),
            KeyRecord("k5", "acme", HASH, team="gone"),
        )
    }
    assert org.resolve_all(recs) == {kid: org.resolve(r) for kid, r in recs.items()}


def test_a_jwt_caller_gets_the_directory_team_and_allow_list_and_may_be_unregistered() -> None:
    org = Org(
        teams={("acme", "ml"): TeamRecord("acme", "ml", models=("gpt-4o", "o3"))},
        users={("acme", "ada"): UserRecord("acme", "ada", "ml", models=("o3", "claude"))},
    )
    # A registered user: its team is the directory's, whatever the token claims; lists narrowed.
    assert org.caller("acme", "other", "ada", ("*",)) == ("ml", ("o3",))
    # A registered team, an unregistered user: the team's list applies.
    assert org.caller("acme", "ml", "eve", ("*",)) == ("ml", ("gpt-4o", "o3"))
    # Nothing registered: charged at its levels with the provider's models.
    assert org.caller("acme", "ops", "eve", ("gpt-4o",)) == ("ops", ("gpt-4o",))


def test_authorize_narrows_a_verified_jwt_caller_with_the_org() -> None:
    from sidegate.features.auth.decide import authorize
    from sidegate.features.auth.throttle import FailureThrottle

    class _Jwt:
        def decide(self, headers: dict[str, str], found: Any) -> Allow:
            return Allow(tenant="acme", key_id="jwt:corp", models=("*",), team="", user="ada")

    org = Org(users={("acme", "ada"): UserRecord("acme", "ada", "", models=("o3",))})
    got = authorize({":path": "/v1/chat/completions"}, {}, FailureThrottle(), "1.2.3.4",
                    jwt=_Jwt(), jwt_found={}, org=org)  # type: ignore[arg-type]  # fmt: skip
    assert (got.tenant, got.team, got.user, got.models) == ("acme", "", "ada", ("o3",))

"""Provider credential schemes: what each sets per try, what it scrubs, and which one a provider's
config picks (sidegate/credentials/)."""

from __future__ import annotations

import pytest

from sidegate import config
from sidegate.config import ProviderConfig
from sidegate.credentials import for_provider
from sidegate.credentials.bearer import BearerKey
from sidegate.credentials.env import EnvironmentKey, env_credential
from sidegate.credentials.header import HeaderKey
from sidegate.credentials.none import NoCredential
from sidegate.credentials.pool import PooledKey

KEY = "sk-test-0123456789abcdef"
KEY2 = "sk-test-2222222222abcdef"


def _provider(monkeypatch: pytest.MonkeyPatch, **fields: object) -> ProviderConfig:
    monkeypatch.setenv("CRED_KEY", KEY)
    monkeypatch.setenv("CRED_KEY2", KEY2)
    monkeypatch.delenv("CRED_UNSET", raising=False)
    cfg = config.parse(
        {
            "providers": {"p": {"base_url": "https://provider.test", **fields}},
            "models": {"m": {"routes": [{"provider": "p"}]}},
        },
        env={},
    )
    return cfg.providers["p"]


def _applied(p: ProviderConfig, tries: int = 1) -> list[dict[str, str]]:
    cred = for_provider(p)
    out = []
    for _ in range(tries):
        headers: dict[str, str] = {}
        cred.apply(headers)
        out.append(headers)
    return out


@pytest.mark.parametrize(
    ("fields", "scheme", "headers"),
    [
        ({"api": "openai", "api_key_env": "CRED_KEY"}, BearerKey, {"authorization": f"Bearer {KEY}"}),
        ({"api": "anthropic", "api_key_env": "CRED_KEY"}, HeaderKey, {"x-api-key": KEY}),
        ({"api": "openai", "api_key_env": "CRED_KEY", "auth": "api-key"}, HeaderKey, {"api-key": KEY}),
        (
            {"api": "anthropic", "api_key_env": "CRED_KEY", "auth": "bearer"},
            BearerKey,
            {"authorization": f"Bearer {KEY}"},
        ),
        ({"api": "openai", "api_key_env": "CRED_KEY", "auth": "none"}, NoCredential, {}),
        ({"api": "openai", "api_key_env": "CRED_UNSET"}, NoCredential, {}),
        ({"api": "openai"}, NoCredential, {}),
        (
            {"api": "openai", "api_key_envs": [{"env": "CRED_KEY"}]},
            BearerKey,
            {"authorization": f"Bearer {KEY}"},
        ),
    ],
)
def test_for_provider_picks_the_scheme(monkeypatch, fields, scheme, headers):
    p = _provider(monkeypatch, **fields)
    assert type(for_provider(p)) is scheme
    assert _applied(p) == [headers]


@pytest.mark.parametrize(
    ("auth", "header", "prefix"), [("bearer", "authorization", "Bearer "), ("x-api-key", "x-api-key", "")]
)
def test_pool_is_weighted_in_either_style(monkeypatch, auth, header, prefix):
    p = _provider(
        monkeypatch,
        api="openai",
        auth=auth,
        api_key_envs=[{"env": "CRED_KEY"}, {"env": "CRED_KEY2", "weight": 2}],
    )
    assert type(for_provider(p)) is PooledKey
    values = [h[header] for h in _applied(p, 6)]
    assert values.count(prefix + KEY) == 2 and values.count(prefix + KEY2) == 4
    assert all(set(h) == {header} for h in _applied(p, 3))


def test_single_key_and_pool_together_rotate(monkeypatch):
    p = _provider(monkeypatch, api="openai", api_key_env="CRED_KEY", api_key_envs=[{"env": "CRED_KEY2"}])
    assert {h["authorization"] for h in _applied(p, 2)} == {f"Bearer {KEY}", f"Bearer {KEY2}"}


def test_secrets_are_every_held_key_long_enough_to_scrub(monkeypatch):
    both = [{"env": "CRED_KEY"}, {"env": "CRED_KEY2"}]
    assert for_provider(_provider(monkeypatch, api="openai", api_key_envs=both)).secrets == (KEY, KEY2)
    assert for_provider(_provider(monkeypatch, api="anthropic", api_key_env="CRED_KEY")).secrets == (KEY,)
    # A key held but not sent (auth: none) is still never echoed to a client.
    assert for_provider(
        _provider(monkeypatch, api="openai", api_key_env="CRED_KEY", auth="none")
    ).secrets == (KEY,)
    assert for_provider(_provider(monkeypatch, api="openai")).secrets == ()
    assert BearerKey("short").secrets == () and HeaderKey("x-api-key", "1234567").secrets == ()


def test_environment_key_is_decided_from_the_config_alone(monkeypatch):
    def env(**fields: object) -> EnvironmentKey | None:
        return env_credential(_provider(monkeypatch, **fields))

    assert env(api="openai", api_key_env="CRED_UNSET") == ("authorization", "Bearer ", "CRED_UNSET")
    assert env(api="anthropic", api_key_env="CRED_KEY") == ("x-api-key", "", "CRED_KEY")
    assert env(api="openai", api_key_env="CRED_KEY", auth="api-key") == ("api-key", "", "CRED_KEY")
    assert env(api="openai", api_key_env="CRED_KEY", auth="none") == ("", "", None)
    assert env(api="openai") == ("", "", None)
    assert env(api="openai", api_key_envs=[{"env": "CRED_KEY"}]) is None  # Python picks each try's key

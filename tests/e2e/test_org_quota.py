"""Issue 28: teams and users under a tenant, through real Envoy behind both fronts.

A request is charged at every level it belongs to (tenant, team, user) and admitted only if all
admit: a user's rpm and a team's token budget are each enforced exactly under 40 concurrent
requests while the tenant's own limits are far away; a team's daily USD budget stops its members;
the allow-list is key ∩ team ∩ user; the ledger records carry the team and the user; changes made
through the control plane apply live.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from harness import FRONT_SERVICES, Stack, front_stack
from quota_helpers import MAX_TOKENS, PER_REQUEST, PROMPT, PROMPT_BODY
from redis.asyncio import Redis

from sidegate import keys
from sidegate.admin.controlplane import ControlPlane
from sidegate.features.quota import QuotaStore
from sidegate.keystore import TenantLimits
from sidegate.store import RedisPyStore

pytestmark = pytest.mark.e2e

USER_RPM = 7
TEAM_FIT = 12
"""Requests of PER_REQUEST tokens the team's tpm admits."""
CONCURRENCY = 40
PRICE = 1000.0  # USD per million tokens, in and out: one request costs PER_REQUEST / 1000 USD
COST = PER_REQUEST * PRICE / 1e6
KEYS = {name: keys.new_key() for name in ("ada", "bob", "ml", "cy", "plain")}
"""Plaintext key and id per holder: user ada and user bob (team ml), team ml itself, user cy (team
ops), and a key of the tenant alone."""


def _key(name: str, **owner: str) -> dict[str, Any]:
    plaintext, kid = KEYS[name]
    return {"id": kid, "hash": keys.hash_key(plaintext), **owner}


STACK_EXTRA = {
    "defaults": {"guard": None},
    "quota": {"prices": {"gpt-4o-mini": {"input_per_mtok": PRICE, "output_per_mtok": PRICE}}},
    "tenants": {
        "initech": {
            # The tenant's own limits: nowhere near what these tests send.
            "quota": {"limits": {"rpm": 100_000, "tpm": 100_000_000, "daily_usd": 1_000_000}},
            "teams": {
                "ml": {"limits": {"tpm": TEAM_FIT * PER_REQUEST + PER_REQUEST - 1}, "models": ["gpt-4o-mini", "gpt-4o"]},
                "ops": {"limits": {"daily_usd": 2.5 * COST}},
            },
            "users": {
                "ada": {"team": "ml", "limits": {"rpm": USER_RPM}, "models": ["gpt-4o-mini", "claude-haiku"]},
                "bob": {"team": "ml"},
                "cy": {"team": "ops"},
            },
            "keys": [_key("ada", user="ada"), _key("bob", user="bob", team="ml"), _key("ml", team="ml"),
                     _key("cy", user="cy"), _key("plain")],
        }
    },
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from front_stack(request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url,
                           STACK_EXTRA)  # fmt: skip


def _client(gw: Stack, holder: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=KEYS[holder][0], max_retries=0, timeout=30)


def _burst(gw: Stack, holders: list[str]) -> dict[str, list[int]]:
    """One request per entry of ``holders``, all at once (asyncio + the openai SDK): statuses per holder."""

    async def run() -> dict[str, list[int]]:
        clients = {h: openai.AsyncOpenAI(base_url=gw.base_url + "/v1", api_key=KEYS[h][0], max_retries=0,
                                         timeout=60) for h in set(holders)}  # fmt: skip

        async def one(holder: str) -> int:
            try:
                await clients[holder].chat.completions.create(**PROMPT_BODY)
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code

        try:
            codes = await asyncio.gather(*(one(h) for h in holders))
        finally:
            for c in clients.values():
                await c.close()
        out: dict[str, list[int]] = {h: [] for h in holders}
        for h, code in zip(holders, codes, strict=True):
            out[h].append(code)
        return out

    return asyncio.run(run())


def _usage(gw: Stack, tenant: str = "initech") -> dict[str, dict[str, Any]]:
    async def go() -> dict[str, dict[str, Any]]:
        r = Redis.from_url(gw.sup.redis_url)
        try:
            return (await QuotaStore(RedisPyStore(r)).usage(tenant))["scopes"]
        finally:
            await r.aclose()

    return asyncio.run(go())


def _control(gw: Stack, op: Any) -> Any:
    async def go() -> Any:
        r = Redis.from_url(gw.sup.redis_url)
        try:
            return await op(ControlPlane(r))
        finally:
            await r.aclose()

    return asyncio.run(go())


def _exact_usage(fake: Any) -> None:
    """The provider reports exactly what was reserved: settling never frees room mid-test."""
    fake.set_default({"usage": {"prompt_tokens": PROMPT, "completion_tokens": MAX_TOKENS}, "delay_s": 0.3})


def test_user_rpm_then_team_budget_exact_under_concurrency(gw, fake_openai):
    _exact_usage(fake_openai)
    try:
        # 40 at once from ada: her rpm admits exactly USER_RPM (the team and tenant have room).
        ada = _burst(gw, ["ada"] * CONCURRENCY)["ada"]
        assert ada.count(200) == USER_RPM and ada.count(429) == CONCURRENCY - USER_RPM, ada
        # 40 at once from bob and the team's own key: the team's tpm admits exactly what is left.
        codes = _burst(gw, ["bob", "ml"] * (CONCURRENCY // 2))
        admitted = codes["bob"].count(200) + codes["ml"].count(200)
        assert admitted == TEAM_FIT - USER_RPM, codes
        assert codes["bob"].count(429) + codes["ml"].count(429) == CONCURRENCY - admitted
        assert len(fake_openai.requests) == TEAM_FIT
    finally:
        fake_openai.set_default(None)
    # The tenant's own limits are not reached: a key of the tenant alone still gets through.
    assert _client(gw, "plain").chat.completions.create(**PROMPT_BODY).choices
    usage = _usage(gw)
    assert usage["team:initech/ml"]["requests"] == TEAM_FIT
    assert usage["team:initech/ml"]["tokens"] == TEAM_FIT * PER_REQUEST
    assert usage["user:initech/ada"]["requests"] == USER_RPM
    assert usage["user:initech/bob"]["requests"] == TEAM_FIT - USER_RPM - codes["ml"].count(200)
    assert usage["tenant:initech"]["requests"] == TEAM_FIT + 1

    # Refused by the team: the 429 names the team's scope, in OpenAI's format.
    with pytest.raises(openai.RateLimitError) as exc:
        _client(gw, "bob").chat.completions.create(**PROMPT_BODY)
    assert "team:initech/ml" in exc.value.message

    # Every admitted request's ledger record carries its tenant, team and user.
    rec = gw.wait_ledger(lambda r: r.key_id == KEYS["ada"][1])
    assert (rec.tenant, rec.team, rec.user) == ("initech", "ml", "ada")
    rec = gw.wait_ledger(lambda r: r.key_id == KEYS["plain"][1])
    assert (rec.team, rec.user) == ("", "")
    if codes["ml"].count(200):
        rec = gw.wait_ledger(lambda r: r.key_id == KEYS["ml"][1])
        assert (rec.team, rec.user) == ("ml", "")


def test_team_daily_budget_stops_its_users(gw, fake_openai):
    """ops' daily budget is 2.5 requests' cost: the spend is charged after each request, so three
    get through and the fourth is refused (sequential: a spend budget is checked before a request
    and charged after it, docs/quota.md)."""
    _exact_usage(fake_openai)
    cy = _client(gw, "cy")
    for i in range(3):
        assert cy.chat.completions.create(**PROMPT_BODY).choices
        deadline = time.monotonic() + 5
        while _usage(gw).get("team:initech/ops", {}).get("spent_day_usd", 0) < COST * (i + 1) - 1e-9:
            assert time.monotonic() < deadline, "the spend was not settled"
            time.sleep(0.05)
    with pytest.raises(openai.RateLimitError) as exc:
        cy.chat.completions.create(**PROMPT_BODY)
    assert "team:initech/ops" in exc.value.message
    spent = _usage(gw)
    assert spent["team:initech/ops"]["spent_day_usd"] == pytest.approx(3 * COST)
    assert spent["user:initech/cy"]["spent_day_usd"] == pytest.approx(3 * COST)
    rec = gw.wait_ledger(lambda r: r.key_id == KEYS["cy"][1] and r.status == 200)
    assert (rec.team, rec.user) == ("ops", "cy") and rec.cost_usd == pytest.approx(COST)
    refused = gw.wait_ledger(lambda r: r.key_id == KEYS["cy"][1] and r.status == 429)
    assert (refused.team, refused.user, refused.cost_usd) == ("ops", "cy", 0)


def test_allow_list_is_key_team_user_intersection(gw):
    # ada: her key allows every model, her team gpt-4o-mini and gpt-4o, she gpt-4o-mini and claude-haiku.
    ada = _client(gw, "ada")
    assert [m.id for m in ada.models.list()] == ["gpt-4o-mini"]
    for model in ("gpt-4o", "claude-haiku"):  # refused by the user's list, then by the team's
        with pytest.raises(openai.PermissionDeniedError) as exc:
            ada.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert exc.value.status_code == 403 and exc.value.body["code"] == "model_not_allowed"
    assert sorted(m.id for m in _client(gw, "ml").models.list()) == ["gpt-4o", "gpt-4o-mini"]
    assert len(_client(gw, "plain").models.list().data) == 3


def test_changes_apply_live(gw):
    """A user made through the control plane, with a key for it, then its allow-list changed."""
    plaintext, kid = _control(gw, lambda c: _make_eve(c))
    eve = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=plaintext, max_retries=0, timeout=30)
    deadline = time.monotonic() + 5
    while True:  # the new key reaches the gateway within a poll
        try:
            eve.models.list()
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    with pytest.raises(openai.PermissionDeniedError):
        eve.chat.completions.create(**PROMPT_BODY)
    _control(gw, lambda c: c.put_user("initech", "eve", None, TenantLimits(rpm=100), ["*"]))
    deadline = time.monotonic() + 5
    while True:
        try:
            assert eve.chat.completions.create(**PROMPT_BODY).choices
            break
        except openai.PermissionDeniedError:
            assert time.monotonic() < deadline, "the allow-list change did not apply"
            time.sleep(0.1)
    rec = gw.wait_ledger(lambda r: r.key_id == kid)
    assert (rec.team, rec.user) == ("", "eve")


async def _make_eve(c: ControlPlane) -> tuple[str, str]:
    await c.put_user("initech", "eve", None, None, ["gpt-4o"])
    plaintext, info = await c.create_key("initech", user="eve")
    return plaintext, info.id

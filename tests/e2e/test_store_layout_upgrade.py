"""Upgrading onto a store written before the config plane's `{sg}` hash tag: a store holding a
tenant key, its tenant's limits and an admin token under the old names (`sg:keys`, `sg:key:<id>`,
`sg:tenants`, `sg:tenant:<name>`, `sg:admintokens`, `sg:admintoken:<id>`, written field by field
as the old keystore and admin-token code wrote them: their layout docstrings at commit b161f17),
then the current stack started on it (an external store, `store.url`): the old key is served
through real Envoy on the default front, the admin API lists it and accepts the old admin token,
and the old keys are still there, unchanged (copied, not renamed: a rolling upgrade's old
processes keep reading them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from harness import ADMIN_TOKEN, Stack
from quota_helpers import Server, running_server

from sidegate import keys, keystore
from sidegate.admin import tokens
from sidegate.store import client
from sidegate.store.layout import MIGRATED

pytestmark = pytest.mark.e2e

OLD_KEY, OLD_KID = keys.new_key()
OLD_TOKEN, OLD_TID = tokens.new_token()
OLD_RECORD = {  # KeyRecord.to_redis() before the tag
    "tenant": "legacy", "hash": keys.hash_key(OLD_KEY), "models": '["*"]', "revoked": "0",
    "expires_at": "0.0", "created_at": "1796000000.0",
}  # fmt: skip
OLD_TOKEN_RECORD = {
    "role": "owner", "tenant": "", "name": "ops before the upgrade", "hash": keys.hash_key(OLD_TOKEN),
    "created_at": "1796000000.0", "expires_at": "0", "revoked": "0", "revoked_at": "0", "created_by": "bootstrap",
}  # fmt: skip


async def _write_old_layout(url: str) -> None:
    r = client(url)
    try:
        pipe = r.pipeline(transaction=True)  # as the old keystore.put did it
        pipe.hset(f"sg:key:{OLD_KID}", mapping=OLD_RECORD)
        pipe.sadd("sg:keys", OLD_KID)
        pipe.sadd("sg:tenants", "legacy")
        pipe.incr("sg:keys:version")
        pipe.hset("sg:tenant:legacy", mapping={"rpm": "1000"})
        pipe.incr("sg:config:version")
        pipe.hset(f"sg:admintoken:{OLD_TID}", mapping=OLD_TOKEN_RECORD)
        pipe.sadd("sg:admintokens", OLD_TID)
        await pipe.execute()
    finally:
        await r.aclose()


@pytest.fixture(scope="module")
def old_store() -> Iterator[Server]:
    with running_server("valkey") as srv:
        asyncio.run(_write_old_layout(srv.url))
        yield srv


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fake_openai, fake_anthropic, old_store: Server) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url,
              extra={"store": {"url": old_store.url}})  # fmt: skip
    s.start()
    yield s
    s.stop()


def _admin(stack: Stack, token: str) -> httpx.Client:
    assert stack.sup is not None
    port = stack.sup.cfg.services.admin_port
    return httpx.Client(base_url=f"http://127.0.0.1:{port}/admin/v1",
                        headers={"authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip


def test_the_old_tenant_key_is_served_through_envoy(stack: Stack, old_store: Server, fake_openai) -> None:
    assert stack.sup is not None and stack.sup.redis_url == old_store.url  # no embedded store
    c = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=OLD_KEY, max_retries=0, timeout=20)
    n = len(fake_openai.requests)
    deadline = time.monotonic() + 10
    while True:  # the key cache loads the store's keys at its start
        try:
            got = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "the old layout's key was never accepted"
            time.sleep(0.2)
    assert got.choices[0].message.content and len(fake_openai.requests) > n
    # A key of the config file still works next to it (seeded under the new names).
    cfg_key = openai.OpenAI(
        base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0, timeout=20
    )
    assert cfg_key.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    ).id


def test_the_admin_api_lists_the_old_key_and_takes_the_old_admin_token(stack: Stack) -> None:
    for token in (ADMIN_TOKEN, OLD_TOKEN):
        with _admin(stack, token) as a:
            r = a.get("/keys", params={"tenant": "legacy"})
            assert r.status_code == 200, r.text
            assert [(k["id"], k["tenant"]) for k in r.json()["keys"]] == [(OLD_KID, "legacy")]
    with _admin(stack, ADMIN_TOKEN) as a:
        listed = {k["id"] for k in a.get("/keys").json()["keys"]}
    assert OLD_KID in listed and stack.keys["acme"].id in listed


def test_the_old_keys_are_copied_not_renamed(stack: Stack, old_store: Server) -> None:
    async def read() -> None:
        r = client(old_store.url)
        try:
            assert await r.get(MIGRATED) == b"2"
            # The old names, as an old process still running during the upgrade reads them.
            assert await r.smembers("sg:keys") == {OLD_KID.encode()}
            assert await r.hgetall(f"sg:key:{OLD_KID}") == {
                k.encode(): v.encode() for k, v in OLD_RECORD.items()
            }
            assert await r.hget("sg:tenant:legacy", "rpm") == b"1000"
            assert await r.sismember("sg:admintokens", OLD_TID)
            # The new names: the old records plus the config file's keys.
            assert await r.sismember(keystore.KEY_SET, OLD_KID)
            assert await r.sismember(keystore.KEY_SET, stack.keys["acme"].id)
            assert await r.hget(keystore.record_key(OLD_KID), "tenant") == b"legacy"
            assert await r.hget(keystore.tenant_key("legacy"), "rpm") == b"1000"
            assert await r.sismember(keystore.TENANT_SET, "legacy")
        finally:
            await r.aclose()

    asyncio.run(read())

"""Control-plane operations against a real Valkey, seen by authz's KeyCache like a gateway replica."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import controlplane_helpers as h

from sidegate import keys, keystore
from sidegate.admin import controlplane as cp
from sidegate.features.auth.decide import Allow, Deny, decide
from sidegate.features.auth.keycache import KeyCache
from sidegate.keystore import KeyRecord, TenantLimits
from sidegate.store.redispy import client

valkey_url = h.valkey_url

run, _req = h.run, h.gateway_request


def test_create_key_record_verifies(valkey_url: str) -> None:
    async def body(c: cp.ControlPlane) -> None:
        v0 = int(await c.redis.get(keystore.VERSION) or 0)
        key, info = await c.create_key("acme", ["gpt-4o", "gpt-4o"], expires_at=None)
        assert keys.key_id(key) == info.id and info.models == ("gpt-4o",) and info.status() == "active"
        version, recs = await keystore.load_all(c.redis)
        assert version == v0 + 1
        rec = recs[info.id]
        assert rec.tenant == "acme" and keys.verify(key, rec.hash) and not keys.verify(key + "x", rec.hash)
        assert key not in str(await c.redis.hgetall(keystore.record_key(info.id)))  # only the hash is stored
        assert "acme" in {t.name for t in await c.list_tenants()}  # registered on first key
        listed = [i.to_dict() for i in await c.list_keys("acme")]
        assert [d["id"] for d in listed] == [info.id] and "hash" not in listed[0]
        assert await c.list_keys("globex") == []
        assert isinstance(decide(_req(key), recs), Allow)

    run(valkey_url, body)


def test_revoke_and_unknown(valkey_url: str) -> None:
    async def body(c: cp.ControlPlane) -> None:
        key, info = await c.create_key("acme")
        revoked = await c.revoke_key(info.id)
        assert revoked.revoked and revoked.revoked_at and revoked.status() == "revoked"
        assert (await c.revoke_key(info.id)).revoked_at == revoked.revoked_at  # idempotent
        _, recs = await keystore.load_all(c.redis)
        res = decide(_req(key), recs)
        assert isinstance(res, Deny) and res.reason == "revoked_key"
        with pytest.raises(cp.NotFound):
            await c.revoke_key("zzzzzzzz")
        with pytest.raises(cp.Invalid):
            await c.revoke_key("NOT-AN-ID")
        with pytest.raises(cp.Conflict):
            await c.rotate_key(info.id, 10)

    run(valkey_url, body)


def test_rotate_with_overlap(valkey_url: str) -> None:
    now = 1_900_000_000.0

    async def body(c: cp.ControlPlane) -> None:
        c.clock = lambda: now
        old_key, old = await c.create_key("acme", ["claude-haiku"])
        rot = await c.rotate_key(old.id, overlap_s=300)
        assert rot.new.tenant == "acme" and rot.new.models == ("claude-haiku",) and rot.new.id != old.id
        assert rot.old.expires_at == now + 300 and rot.new.expires_at is None
        _, recs = await keystore.load_all(c.redis)
        assert isinstance(decide(_req(old_key), recs, now=now + 299), Allow)  # old key still valid
        expired = decide(_req(old_key), recs, now=now + 300)
        assert isinstance(expired, Deny) and expired.reason == "expired_key"
        assert isinstance(decide(_req(rot.key), recs, now=now + 10_000), Allow)
        # Rotating again never extends the old key's life.
        again = await c.rotate_key(old.id, overlap_s=3600)
        assert again.old.expires_at == now + 300
        # overlap 0: the old key stops at once.
        rot0 = await c.rotate_key(rot.new.id, overlap_s=0)
        _, recs = await keystore.load_all(c.redis)
        assert isinstance(decide(_req(rot.key), recs, now=now), Deny)
        assert isinstance(decide(_req(rot0.key), recs, now=now), Allow)
        with pytest.raises(cp.Invalid):
            await c.rotate_key(old.id, overlap_s=-1)

    run(valkey_url, body)


def test_tenants_and_limits(valkey_url: str) -> None:
    async def body(c: cp.ControlPlane) -> None:
        cv = lambda: c.redis.get(keystore.CONFIG_VERSION)  # noqa: E731
        v0 = int(await cv() or 0)
        info, created = await c.create_tenant("globex", TenantLimits(rpm=60, daily_usd=2.5))
        assert created and info.limits == TenantLimits(rpm=60, daily_usd=2.5)
        assert int(await cv()) == v0 + 1
        assert (await c.create_tenant("globex"))[1] is False and int(await cv()) == v0 + 1  # no-op, no bump
        raw = await c.redis.hgetall(keystore.tenant_key("globex"))
        assert raw == {b"rpm": b"60", b"daily_usd": b"2.5"}  # documented layout: set limits only
        info = await c.set_limits("globex", TenantLimits(tpm=1000, monthly_usd=40.0))
        assert info.limits == TenantLimits(tpm=1000, monthly_usd=40.0) and int(await cv()) == v0 + 2
        assert await keystore.tenant_limits(c.redis, "globex") == info.limits
        version, limits = await keystore.load_tenants(c.redis)
        assert version == v0 + 2 and limits == {"globex": info.limits}
        await c.set_limits("globex", TenantLimits())
        assert not await c.redis.exists(keystore.tenant_key("globex"))
        with pytest.raises(cp.NotFound):
            await c.set_limits("initech", TenantLimits(rpm=1))
        with pytest.raises(cp.Invalid):
            cp.check_limits({"rpm": 1.5})
        with pytest.raises(cp.Invalid):
            cp.check_limits({"rpm": True})
        with pytest.raises(cp.Invalid):
            cp.check_limits({"burst": 3})
        assert cp.check_limits({"rpm": 5.0, "daily_usd": None}) == TenantLimits(rpm=5)

    run(valkey_url, body)


def test_delete_tenant_revokes_its_keys(valkey_url: str) -> None:
    async def body(c: cp.ControlPlane) -> None:
        k1, _ = await c.create_key("initech")
        _, i2 = await c.create_key("initech")
        await c.revoke_key(i2.id)
        k3, _ = await c.create_key("acme")
        await c.set_limits("initech", TenantLimits(rpm=1))
        kv, cv = await c.redis.get(keystore.VERSION), await c.redis.get(keystore.CONFIG_VERSION)
        assert await c.delete_tenant("initech") == 1
        assert int(await c.redis.get(keystore.VERSION)) == int(kv) + 1
        assert int(await c.redis.get(keystore.CONFIG_VERSION)) == int(cv) + 1
        assert "initech" not in {t.name for t in await c.list_tenants()}
        assert not await c.redis.exists(keystore.tenant_key("initech"))
        _, recs = await keystore.load_all(c.redis)
        assert isinstance(decide(_req(k1), recs), Deny) and isinstance(decide(_req(k3), recs), Allow)
        with pytest.raises(cp.NotFound):
            await c.delete_tenant("initech")
        with pytest.raises(cp.NotFound):
            await c.get_tenant("initech")

    run(valkey_url, body)


def test_seeded_config_keys_register_their_tenant(valkey_url: str) -> None:
    async def body(c: cp.ControlPlane) -> None:
        await keystore.put(c.redis, [KeyRecord(id="seed0001", tenant="hooli", hash="sha256:" + "a" * 64)])
        tenants = {t.name: t for t in await c.list_tenants()}
        assert tenants["hooli"].keys == 1
        info = (await c.list_keys("hooli"))[0]
        assert info.created_at is None and info.status() == "active"  # config keys carry no created_at

    run(valkey_url, body)


@pytest.mark.alone  # bounds a duration
def test_two_keycache_replicas_see_revoke_within_1s(valkey_url: str) -> None:
    """Two authz replicas (KeyCache instances, own connections) pick up a live revoke in < 1 s."""

    async def main() -> None:
        admin = client(valkey_url, socket_timeout_s=2.0)
        replicas = [client(valkey_url, socket_timeout_s=2.0) for _ in range(2)]
        caches = [KeyCache(r, poll_s=0.25) for r in replicas]
        c = cp.ControlPlane(admin)
        try:
            for cache in caches:
                await cache.start()
            key, info = await c.create_key("acme", ["gpt-4o-mini"])

            async def until(pred: Callable[[KeyCache], bool]) -> float:
                t0 = time.monotonic()
                while not all(pred(cache) for cache in caches):
                    assert time.monotonic() - t0 < 2.0, "replicas did not reload in time"
                    await asyncio.sleep(0.01)
                return time.monotonic() - t0

            created_s = await until(lambda kc: isinstance(decide(_req(key), kc.records), Allow))
            await c.revoke_key(info.id)
            revoked_s = await until(lambda kc: isinstance(decide(_req(key), kc.records), Deny))
            print(f"replicas saw the new key after {created_s:.3f}s and the revoke after {revoked_s:.3f}s")
            assert created_s < 1.0 and revoked_s < 1.0
        finally:
            for cache in caches:
                await cache.stop()
            for r in [admin, *replicas]:
                await r.aclose()

    asyncio.run(main())

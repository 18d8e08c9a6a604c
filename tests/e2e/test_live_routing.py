"""Issue 26, "Done when": live changes on two gateway replicas sharing one store, through real Envoy,
under steady load on both fronts (tests/live_helpers.py, tests/live_load.py).

One pair of replicas per front; the changes run one after the other inside one load window, each
measured on both replicas (commit -> the first of two consecutive probes showing it)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from live_dump import config_dump, differences, dumped, static_render
from live_helpers import Replica, replicas, start_fakes, until_applied
from live_load import Load, LongStream

from sidegate.fakes import FakeProviderThread

pytestmark = pytest.mark.e2e
LOAD_MODELS = ["chat", "canary", "priced"]
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeProviderThread]]:
    fps = start_fakes()
    yield fps
    for fp in fps.values():
        fp.stop()


@pytest.fixture(scope="module", params=["ext_proc", "http"])
def reps(request, tmp_path_factory, fakes) -> Iterator[list[Replica]]:
    yield from replicas(request.param, tmp_path_factory.mktemp(f"live-{request.param}"), fakes)


def _status(r: Replica, key: str) -> int:
    return httpx.post(r.base_url + "/v1/chat/completions", json=BODY,
                      headers={"authorization": f"Bearer {key}"}, timeout=10).status_code  # fmt: skip


def _report(what: str, took: list[float]) -> None:
    print(f"{what}: " + ", ".join(f"replica {i} {t * 1000:.0f} ms" for i, t in enumerate(took)))


def test_key_revocation_and_tenant_limit_apply_on_both_replicas_under_load(reps: list[Replica]) -> None:
    a = reps[0]
    urls = [r.base_url for r in reps]
    victim, limited = a.keys["victim"], a.keys["limited"]
    assert all(_status(r, victim.key) == 200 and _status(r, limited.key) == 200 for r in reps)
    with Load(urls, a.keys["load"].key, LOAD_MODELS) as load:
        time.sleep(0.5)
        longs = [LongStream(u, a.keys["load"].key, "chat-long", i) for i, u in enumerate(urls)]
        time.sleep(0.3)
        with a.admin() as adm:
            since = time.monotonic()
            assert adm.post(f"/keys/{victim.id}/revoke").status_code == 200
            revoked = until_applied(reps, lambda r: _status(r, victim.key) == 401, since)
            since = time.monotonic()
            assert adm.put("/tenants/limited/limits", json={"tpm": 10}).status_code == 200
            limited_took = until_applied(reps, lambda r: _status(r, limited.key) == 429, since)
        for s in longs:
            s.result()
        time.sleep(0.3)
    _report("key revoked", revoked)
    _report("tenant limit", limited_took)
    print("load:", load.summary())
    assert not load.failures(), load.failures()[:5]
    assert all(s.complete for s in longs), [s.outcome for s in longs]
    assert max(revoked + limited_took) < 1.0
    assert load.summary()["requests"] > 20


def test_envoy_config_dump_matches_a_fresh_render_on_each_replica(reps: list[Replica]) -> None:
    for r in reps:
        assert r.sup is not None
        expected = static_render(r.sup.cfg, str(r.sup.workdir / "internal-token.yaml"))
        assert not differences(dumped(config_dump(r.admin_url)), expected)

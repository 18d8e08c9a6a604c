"""Issue 9: keys managed live through the admin API, effective through Envoy on two authz replicas."""

from __future__ import annotations

import time

import httpx
import pytest
from harness import ADMIN_TOKEN

pytestmark = pytest.mark.e2e
STACK_EXTRA = {"services": {"auth": "ext_authz", "front": "ext_proc", "authz_workers": 2}}  # two authz replicas
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def admin(stack) -> httpx.Client:
    port = stack.sup.cfg.services.admin_port
    return httpx.Client(base_url=f"http://127.0.0.1:{port}/admin/v1", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)


def _status(stack, key: str) -> int:
    return httpx.post(stack.base_url + "/v1/chat/completions", json=BODY,
                      headers={"authorization": f"Bearer {key}"}, timeout=10).status_code  # fmt: skip


def _until(pred, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s")


@pytest.mark.alone  # bounds a duration
def test_create_then_revoke_within_a_second_on_both_replicas(stack):
    assert len([c for c in stack.sup.children if c.name.startswith("authz")]) == 2
    with admin(stack) as a:
        r = a.post("/keys", json={"tenant": "acme", "models": ["gpt-4o-mini"]})
        assert r.status_code == 201, r.text
        key, kid = r.json()["key"], r.json()["record"]["id"]
        took = _until(lambda: all(_status(stack, key) == 200 for _ in range(4)), 1.0)
        assert a.post(f"/keys/{kid}/revoke").status_code == 200
        took_revoke = _until(lambda: all(_status(stack, key) == 401 for _ in range(6)), 1.0)
    assert took < 1.0 and took_revoke < 1.0


def test_admin_api_requires_the_admin_token(stack):
    port = stack.sup.cfg.services.admin_port
    url = f"http://127.0.0.1:{port}/admin/v1/keys"
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}, timeout=5).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5).status_code == 200

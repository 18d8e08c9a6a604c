"""Issue 11 (security): guessing one key's secret from one address is blocked after a few
failures, for that key id from that address only, and recovers after the block."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e
STACK_EXTRA = {"services": {"auth_max_failures": 5, "auth_block_s": 1.5}}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _post(stack, key: str) -> httpx.Response:
    return httpx.post(stack.base_url + "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}, timeout=10)


def test_failed_guesses_block_the_key_id_then_it_recovers(stack):
    kid = stack.keys["acme"].id
    codes = [_post(stack, f"sgk_{kid}_{secrets.token_hex(20)}").status_code for i in range(5)]
    assert codes == [401] * 5
    r = _post(stack, stack.keys["acme"].key)  # even the valid key: its id is blocked from this address
    assert r.status_code == 429 and r.json()["error"]["code"] == "auth_rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    assert _post(stack, stack.keys["globex"].key).status_code == 200  # other keys: not locked out
    time.sleep(1.6)
    assert _post(stack, stack.keys["acme"].key).status_code == 200

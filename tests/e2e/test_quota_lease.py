"""Quota leases (quota.lease) through Envoy with two extproc processes sharing one Valkey: a busy
tenant's requests are admitted from leases and its usage comes out exact once the leases end.
(Leases are on by default: tests/e2e/test_quota.py shows a tenant near its limit still admitted
exactly up to it, a concurrent burst getting what fits.)"""

from __future__ import annotations

import time

import pytest
from fault_helpers import metric_sum, metrics_text, tenant_usage
from quota_helpers import PROMPT, burst

pytestmark = pytest.mark.e2e

STACK_EXTRA = {  # two extproc processes sharing one Valkey; short leases
    "services": {"extproc_workers": 2},
    "store": {"socket_timeout_s": 5.0},
    "quota": {"op_timeout_s": 5.0, "lease": {"enabled": True, "ttl_ms": 300, "flush_ms": 20}},
    "defaults": {"guard": None},
    "tenants": {"globex": {"quota": {"limits": {"rpm": 100_000, "tpm": 10**9}}}},
}


def test_a_busy_tenant_is_admitted_from_leases_and_counted_exactly(stack, fake_openai):
    fake_openai.set_default({"usage": {"prompt_tokens": PROMPT, "completion_tokens": 7}})
    try:
        codes = burst(stack.base_url, stack.keys["globex"].key, 300, 16)
    finally:
        fake_openai.set_default(None)
    assert codes.count(200) == 300, {c: codes.count(c) for c in set(codes)}
    # Once the leases end (300 ms) and the true-ups are written, the store holds what was used:
    # 300 requests, each the provider's usage, nothing of the leases' unused capacity.
    want = {"requests": 300, "tokens": 300 * (PROMPT + 7)}
    deadline = time.monotonic() + 10
    got: dict = {}
    while time.monotonic() < deadline:
        u = tenant_usage(stack, "globex")
        got = {"requests": u["requests"], "tokens": u["tokens"]}
        if got == want:
            break
        time.sleep(0.1)
    assert got == want
    # Most requests skipped the store's reservation.
    assert metric_sum(metrics_text(stack), "sidegate_quota_lease_admits_total") > 100

"""Rate-limit header rendering, reset formatting, 429 errors, prices and policy models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidegate.core.pricing import cost_usd
from sidegate.features.quota import (
    Decision,
    Limits,
    Price,
    QuotaPolicy,
    TenantQuota,
    build_scopes,
    format_reset,
    price_for,
    ratelimit_headers,
    rejection_error,
)
from sidegate.translate.base import Usage


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-1, "0s"),
        (0.0004, "1ms"),
        (0.012, "12ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (61.25, "1m1.25s"),
        (3600, "1h0m0s"),
        (86_400, "24h0m0s"),
    ],
)
def test_format_reset_matches_openai_style(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_headers_for_admitted_and_rejected() -> None:
    ok = Decision(True, limit_requests=60, remaining_requests=59, reset_requests_s=60.4, limit_tokens=1000,
                  remaining_tokens=0, reset_tokens_s=0.25)  # fmt: skip
    assert ratelimit_headers(ok) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1m0.4s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "250ms",
    }
    only_tokens = Decision(False, reason="tpm", scope="tenant:a", retry_after_s=2.2, limit_tokens=10,
                           remaining_tokens=3, reset_tokens_s=3)  # fmt: skip
    h = only_tokens.headers()
    assert "x-ratelimit-limit-requests" not in h and h["retry-after"] == "3"
    err = rejection_error(only_tokens)
    assert err.status == 429 and err.code == "rate_limit_exceeded" and "2.2s" in err.message
    assert err.headers == h
    budget = rejection_error(Decision(False, reason="monthly_usd", scope="tenant:a", retry_after_s=3600))
    assert budget.code == "insufficient_quota" and "monthly" in budget.message
    big = rejection_error(Decision(False, reason="too_large", scope="key:k", limit_tokens=5))
    assert big.status == 429 and "retry-after" not in big.headers


def test_cost_usd_with_cache_reads_and_writes() -> None:
    p = Price(input_per_mtok=2.5, output_per_mtok=10, cached_input_per_mtok=1.25)
    u = Usage(input_tokens=1_000_000, output_tokens=100_000, cached_tokens=400_000)
    assert cost_usd(p, u) == pytest.approx(0.6 * 2.5 + 0.4 * 1.25 + 0.1 * 10)
    a = Price(input_per_mtok=3, output_per_mtok=15, cached_input_per_mtok=0.3, cache_write_per_mtok=3.75)
    u = Usage(input_tokens=1000, output_tokens=10, cached_tokens=500, cache_creation_tokens=300)
    assert cost_usd(a, u) == pytest.approx((200 * 3 + 500 * 0.3 + 300 * 3.75 + 10 * 15) / 1e6)
    plain = Price(input_per_mtok=1, output_per_mtok=2)
    assert cost_usd(plain, Usage(input_tokens=10, cached_tokens=99)) == pytest.approx(10 / 1e6)


def test_price_lookup_exact_then_longest_glob() -> None:
    prices = {
        "gpt-4o": Price(input_per_mtok=2.5, output_per_mtok=10),
        "gpt-4o*": Price(input_per_mtok=1, output_per_mtok=1),
        "gpt-4o-mini*": Price(input_per_mtok=0.15, output_per_mtok=0.6),
    }
    assert price_for(prices, "gpt-4o").input_per_mtok == 2.5
    assert price_for(prices, "gpt-4o-mini-2024-07-18").input_per_mtok == 0.15
    assert price_for(prices, "gpt-4o-2024-11-20").input_per_mtok == 1
    assert price_for(prices, "claude-x") is None


def test_policy_validation_and_scopes() -> None:
    pol = QuotaPolicy.model_validate(
        {"window_s": 60, "buckets": 12, "prices": {"m*": {"input_per_mtok": 1, "output_per_mtok": 2}}}
    )
    assert pol.price("m1") is not None
    with pytest.raises(ValidationError):
        QuotaPolicy(window_s=1, buckets=7)
    with pytest.raises(ValidationError):
        Limits.model_validate({"rpm": -1})
    with pytest.raises(ValidationError):
        Limits.model_validate({"rps": 1})
    q = TenantQuota.model_validate(
        {"limits": {"rpm": 10}, "keys": {"k1": {"tpm": 5}, "k2": {}}, "models": {"gpt-4o": {"daily_usd": 1}}}
    )
    names = [s.name for s in build_scopes("acme", q, key_id="k1", model="gpt-4o")]
    assert names == ["tenant:acme", "key:k1", "model:acme:gpt-4o"]
    assert [s.name for s in build_scopes("acme", q, key_id="k2", model="other")] == ["tenant:acme"]
    default = build_scopes("new", None, default_limits=Limits(rpm=3))
    assert default[0].limits.rpm == 3

"""The Gemini provider e2e module's stack: a Gemini fake with its own key, the config that routes to
it (alone, before and after the OpenAI fake, with a wrong key, for embeddings), tenants one test
each uses alone, and the quota's view of them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sidegate import keys
from sidegate.fakes import FakeProviderThread

GEMINI_KEY = "gk-provider-gemini-SECRET-0004"
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
OWN_KEYS = {tenant: keys.new_key() for tenant in ("gem-metered-b", "gem-metered-s", "gem-emb-metered")}
"""Tenants one test each uses alone: the quota's sliding window holds that test's tokens only."""
_NO_BREAKER = {"failures": 1000, "honour_retry_after": False}  # Envoy's retries on every try


def gemini_fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread(chunks=3, api_key=GEMINI_KEY) as fp:
        yield fp


def own_key(tenant: str) -> str | None:
    return OWN_KEYS[tenant][0] if tenant in OWN_KEYS else None


def extra_config(gemini_url: str) -> dict[str, Any]:
    return {
        "defaults": {"guard": None},
        "providers": {
            "gemini": {"api": "gemini", "base_url": gemini_url, "api_key_env": "E2E_GEMINI_KEY"},
            "gemini-badkey": {"api": "gemini", "base_url": gemini_url, "api_key_env": "E2E_GEMINI_BAD"},
        },
        "models": {
            "gemini-flash": {"routes": [{"provider": "gemini", "model": "gemini-2.0-flash"}]},
            "gem-then-oai": {"routes": [{"provider": "gemini", "model": "gemini-2.0-flash"},
                                        {"provider": "openai", "model": "gpt-4o-mini"}], "breaker": _NO_BREAKER},
            "oai-then-gem": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"},
                                        {"provider": "gemini", "model": "gemini-2.0-flash"}], "breaker": _NO_BREAKER},
            "gemini-3": {"routes": [{"provider": "gemini", "model": "gemini-3-pro-preview"}]},
            "gem-badkey": {"routes": [{"provider": "gemini-badkey", "model": "gemini-2.0-flash"}]},
            "gem-emb": {"routes": [{"provider": "gemini", "model": "text-embedding-004"}]},
        },
        "quota": {"prices": {"gemini-2.0-flash": {"input_per_mtok": 0.10, "output_per_mtok": 0.40},
                             "text-embedding-004": {"input_per_mtok": 0.0, "output_per_mtok": 0.0}}},
        "tenants": {
            tenant: {"keys": [{"id": kid, "hash": keys.hash_key(key), "models": ["*"]}],
                     "quota": {"limits": {"tpm": 10_000_000}}}
            for tenant, (key, kid) in OWN_KEYS.items()
        },
        "env": {"E2E_GEMINI_KEY": GEMINI_KEY, "E2E_GEMINI_BAD": "wrong-gemini-key"},
    }  # fmt: skip

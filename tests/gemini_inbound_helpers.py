"""What the Gemini-client e2e modules share: the stack's extra config (a Gemini fake provider, a
cached model, a metered tenant), google-genai pointed at the gateway, Google's error shape, and what
each fake provider received."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from gemini_helpers import GEMINI_KEY
from google import genai
from google.genai import types
from harness import Stack, front_stack

from sidegate import keys
from sidegate.fakes import FakeProviderThread

LIMIT = 64 * 1024
HELLO = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}
METERED_KEY, METERED_ID = keys.new_key()
"""A tenant one test uses alone: the quota's window holds that test's tokens only."""
PROVIDERS = ["gpt-4o-mini", "claude-haiku", "gemini-flash"]  # translated twice, then passthrough
EMAIL = "jane.doe@example.com"


def extra(gemini_url: str) -> dict[str, Any]:
    return {
        "listener": {"max_request_bytes": LIMIT},
        "providers": {"gemini": {"api": "gemini", "base_url": gemini_url, "api_key_env": "E2E_GEMINI_KEY"}},
        "models": {
            "gemini-flash": {"routes": [{"provider": "gemini", "model": "gemini-2.0-flash"}]},
            "cached": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}], "cache": {"exact": True}, "guard": None},
            "gem-then-oai": {"routes": [{"provider": "gemini", "model": "gemini-2.0-flash"},
                                        {"provider": "openai", "model": "gpt-4o-mini"}],
                             "breaker": {"failures": 1000, "honour_retry_after": False}},
        },
        "tenants": {"gem-in-metered": {"keys": [{"id": METERED_ID, "hash": keys.hash_key(METERED_KEY), "models": ["*"]}],
                                       "quota": {"limits": {"tpm": 10_000_000}}}},
        "env": {"E2E_GEMINI_KEY": GEMINI_KEY},
    }  # fmt: skip


def genai_client(gw: Stack, key: str | None = None, version: str | None = None) -> genai.Client:
    """google-genai pointed at the gateway (given a base_url it speaks api_version v1 unless told)."""
    options = types.HttpOptions(base_url=gw.base_url, api_version=version)
    return genai.Client(api_key=key or gw.keys["acme"].key, http_options=options)


def google_error(r: httpx.Response, code: int, status: str) -> str:
    """The message of a Google-format error answer (asserting its shape)."""
    assert r.status_code == code, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert (err["code"], err["status"]) == (code, status) and set(err) == {"code", "message", "status"}, err
    return str(err["message"])


def fake_for(model: str, fake_openai, fake_anthropic, fake_gemini) -> FakeProviderThread:
    return {"gpt-4o-mini": fake_openai, "claude-haiku": fake_anthropic, "gemini-flash": fake_gemini}[model]


def received(model: str, fake: FakeProviderThread) -> dict[str, Any]:
    """The last body the provider received, on its own API's path with its own key."""
    rec = fake.requests[-1]
    if model == "gemini-flash":
        assert (
            rec.path.startswith("/v1beta/models/gemini-2.0-flash:")
            and rec.headers["x-goog-api-key"] == GEMINI_KEY
        )
        assert rec.query.get("key") is None
    else:
        assert rec.path == ("/v1/chat/completions" if model == "gpt-4o-mini" else "/v1/messages")
        assert "x-goog-api-key" not in rec.headers
    return rec.json


def inbound_stack(request: Any, tmp_path_factory: Any, fake_openai: Any, fake_anthropic: Any,
                  fake_gemini: Any) -> Iterator[Stack]:  # fmt: skip
    """The Gemini-client modules' gateway: one stack per front (`request.param`), every provider."""
    workdir = tmp_path_factory.mktemp("stack")
    yield from front_stack(request.param, workdir, fake_openai.url, fake_anthropic.url, extra(fake_gemini.url))

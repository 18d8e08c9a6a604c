"""What crosses the gateway (issue 21, items 4 and 6), through a real Envoy, on every lane (direct,
full, translated, try) behind both fronts: providers receive only allow-listed client headers and
no client query string; clients never see a provider key in a header or a body, nor provider
headers off the response allow-list; the cache never stores an answer that echoed a key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from fault_helpers import CHAT, MESSAGES, auth_headers, body_for
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY, Stack, front_stack

pytestmark = pytest.mark.e2e
EXTRA: dict[str, Any] = {
    "providers": {
        "openai-org": {"api": "openai", "base_url": "FAKE_OPENAI", "api_key_env": "E2E_OPENAI_KEY",
                       "forward_client_headers": ["openai-organization", "OpenAI-Project"]},
        "azure": {"api": "openai", "base_url": "FAKE_OPENAI", "api_key_env": "E2E_OPENAI_KEY", "auth": "api-key",
                  "path_prefix": "/openai/deployments/{model}", "query": "api-version=2024-10-21"},
    },
    "models": {
        "claude-direct": {"routes": [{"provider": "anthropic"}]},
        "org-model": {"routes": [{"provider": "openai-org"}]},
        "org-alias": {"routes": [{"provider": "openai-org", "model": "gpt-4o-mini"}]},
        "azure-model": {"routes": [{"provider": "azure"}]},
        "cached": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}], "cache": {"exact": True}},
    },
    "defaults": {"guard": None},
}  # fmt: skip
HOSTILE = {  # what a client may send that must never reach a provider
    "proxy-authorization": "Basic cHJveHk6c2VjcmV0", "cookie": "session=tenant-cookie", "x-goog-api-key": "goog-SECRET",
    "x-forwarded-for": "10.9.8.7", "forwarded": "for=10.9.8.7", "openai-organization": "org-tenant-picked",
    "openai-project": "proj-tenant-picked", "x-sidegate-route": "gpt-4o-mini", "accept-encoding": "gzip",
    "x-stainless-os": "Linux",
}  # fmt: skip
PROVIDER_KEYS = (OPENAI_PROVIDER_KEY, ANTHROPIC_PROVIDER_KEY)


@pytest.fixture(scope="module", params=["ext_proc", "http"])
def gw(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from front_stack(request.param, tmp_path_factory.mktemp("hygiene"), fake_openai.url, fake_anthropic.url, EXTRA)


@dataclass(frozen=True)
class Case:
    api: str  # the client's
    model: str
    provider: str  # the fake it reaches
    stream: bool = False
    usage: bool = False  # OpenAI stream_options.include_usage (a direct-lane stream)

    def body(self, text: str = "hello") -> dict[str, Any]:
        extra: dict[str, Any] = {"stream": True} if self.stream else {}
        if self.usage:
            extra["stream_options"] = {"include_usage": True}
        return body_for(self.api, self.model, text, **extra)

    def lane(self, front: str) -> str:
        if self.model in ("gpt-4o-mini", "claude-direct") and (not self.stream or self.usage or self.api == "anthropic"):
            return "direct"
        return "try" if front == "http" and not self.stream else "full"


CASES = [
    Case("openai", "gpt-4o-mini", "openai"),  # direct
    Case("anthropic", "claude-direct", "anthropic"),  # direct
    Case("openai", "gpt-4o-mini", "openai", stream=True, usage=True),  # direct stream
    Case("anthropic", "claude-direct", "anthropic", stream=True),  # direct stream
    Case("openai", "gpt-4o", "openai"),  # alias: full (ext_proc front) / try (HTTP front)
    Case("openai", "claude-haiku", "anthropic"),  # translated: full / try
    Case("anthropic", "gpt-4o", "openai"),  # translated the other way
    Case("openai", "gpt-4o-mini", "openai", stream=True),  # full (include_usage injected)
    Case("openai", "claude-haiku", "anthropic", stream=True),  # translated stream: full
]
IDS = [f"{c.api}-{c.model}{'-stream' if c.stream else ''}{'-usage' if c.usage else ''}" for c in CASES]


def _cluster_requests(stack: Stack, provider: str) -> dict[str, int]:
    out = {}
    for lane, suffix in (("full", ""), ("direct", "~direct"), ("try", "~try")):
        out[lane] = stack.stat(f"cluster.provider.{provider}{suffix}.upstream_rq_total") or 0
    return out


def send(stack: Stack, case: Case, headers: dict[str, str] | None = None, query: str = "", text: str = "hello") -> httpx.Response:
    path = CHAT if case.api == "openai" else MESSAGES
    h = {"content-type": "application/json", "accept": "application/json", **(headers or {}), **auth_headers(stack, case.api)}
    if case.api == "anthropic":
        h["anthropic-version"] = "2023-06-01"
    return httpx.post(stack.base_url + path + query, content=orjson.dumps(case.body(text)), headers=h, timeout=15)


def _lane_of(stack: Stack, case: Case, before: dict[str, int]) -> str:
    after = _cluster_requests(stack, case.provider)
    (lane,) = [k for k in after if after[k] != before[k]]
    return lane


def _fake(case: Case, fake_openai, fake_anthropic):
    return fake_openai if case.provider == "openai" else fake_anthropic


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_provider_gets_only_allowed_client_headers(gw, case, fake_openai, fake_anthropic):
    front = gw.cfg_data["services"]["front"]
    before = _cluster_requests(gw, case.provider)
    r = send(gw, case, HOSTILE)
    assert r.status_code == 200, r.text
    assert _lane_of(gw, case, before) == case.lane(front)
    (rec,) = _fake(case, fake_openai, fake_anthropic).requests
    leaked = sorted(set(HOSTILE) & set(rec.headers))
    assert not leaked, f"forwarded to the provider: {leaked}"
    assert not [h for h in rec.headers if h.startswith(("x-sidegate", "x-envoy", "x-forwarded", "proxy-"))], rec.headers
    assert gw.keys["acme"].key not in repr(rec.headers) + rec.path
    assert rec.headers["content-type"] == "application/json" and rec.headers.get("accept") == "application/json"
    if case.provider == "anthropic":
        assert rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY and "anthropic-version" in rec.headers
    else:
        assert rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"


@pytest.mark.parametrize("case", [c for c in CASES if not c.stream or c.usage], ids=[i for c, i in zip(CASES, IDS, strict=True) if not c.stream or c.usage])
def test_client_query_string_never_reaches_the_provider(gw, case, fake_openai, fake_anthropic):
    """`?key=<tenant key>` is dropped on every lane (a request with a query leaves the direct lane:
    Envoy alone cannot rewrite `:path`)."""
    r = send(gw, case, query=f"?key={gw.keys['acme'].key}&api-version=tenant")
    assert r.status_code == 200, r.text
    (rec,) = _fake(case, fake_openai, fake_anthropic).requests
    assert rec.query == {} and rec.path in (CHAT, MESSAGES)


def test_configured_query_is_the_only_one(gw, fake_openai):
    case = Case("openai", "azure-model", "openai")
    r = send(gw, case, {**HOSTILE}, query=f"?key={gw.keys['acme'].key}&api-version=tenant")
    assert r.status_code == 200, r.text
    (rec,) = fake_openai.requests
    assert rec.path == "/openai/deployments/azure-model/chat/completions" and rec.query == {"api-version": "2024-10-21"}
    assert rec.headers["api-key"] == OPENAI_PROVIDER_KEY and "authorization" not in rec.headers


ORG_CASES = [
    Case("openai", "org-model", "openai"),  # direct
    Case("openai", "org-model", "openai", stream=True, usage=True),  # direct stream
    Case("openai", "org-model", "openai", stream=True),  # full
    Case("openai", "org-alias", "openai"),  # full / try
]


@pytest.mark.parametrize("case", ORG_CASES, ids=["direct", "direct-stream", "full-stream", "alias"])
def test_billing_headers_only_where_the_provider_allows_them(gw, fake_openai, case):
    """The provider allows them; others do not (the full lane's router filter lets the union of
    the providers' lists through, the per-try stage narrows it: test_provider_gets_only_...)."""
    before = _cluster_requests(gw, "openai-org")
    r = send(gw, case, HOSTILE)
    assert r.status_code == 200, r.text
    assert _lane_of(gw, Case("openai", "org", "openai-org"), before) == (
        "direct" if case.model == "org-model" and (not case.stream or case.usage) else case.lane(gw.cfg_data["services"]["front"]))
    (rec,) = fake_openai.requests
    assert rec.headers["openai-organization"] == "org-tenant-picked" and rec.headers["openai-project"] == "proj-tenant-picked"
    assert not {"cookie", "x-goog-api-key", "proxy-authorization", "x-forwarded-for"} & set(rec.headers)


def _echo(key: str, anthropic: bool) -> dict[str, Any]:
    """A provider (or a compromised upstream) echoing the key it was sent, in headers and the answer."""
    return {
        "content": f"your key is {key} ok", "chunks": 1,
        "headers": {"authorization": f"Bearer {key}", ("request-id" if anthropic else "x-request-id"): key,
                    "set-cookie": "provider=session", "x-sidegate-guard": "forged", "x-internal-debug": "host-7"},
    }  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_provider_echoing_its_key_never_shows_it(gw, case, fake_openai, fake_anthropic):
    key = ANTHROPIC_PROVIDER_KEY if case.provider == "anthropic" else OPENAI_PROVIDER_KEY
    fake = _fake(case, fake_openai, fake_anthropic)
    fake.script([_echo(key, case.provider == "anthropic")])
    r = send(gw, case)
    assert r.status_code == 200, r.text
    shown = {k.lower(): v for k, v in r.headers.items()}
    assert not any(k in shown for k in ("authorization", "set-cookie", "x-internal-debug", "openai-organization",
                                        "anthropic-organization-id")), shown  # fmt: skip
    assert shown.get("x-sidegate-guard") != "forged"
    assert not any(k in v for v in shown.values() for k in PROVIDER_KEYS), shown
    assert "content-type" in shown
    assert not any(k in r.text for k in PROVIDER_KEYS), r.text  # direct-lane streams too: the stream watch
    assert "[redacted]" in r.text


def test_cache_never_stores_an_answer_echoing_a_key(gw, fake_openai):
    case = Case("openai", "cached", "openai")
    fake_openai.script([_echo(OPENAI_PROVIDER_KEY, False)])
    text = "cache me if you can " + gw.cfg_data["services"]["front"]
    first = send(gw, case, text=text)
    assert first.status_code == 200 and OPENAI_PROVIDER_KEY not in first.text
    import time

    time.sleep(0.5)  # a fill leaves after the answer
    second = send(gw, case, text=text)
    assert second.status_code == 200 and not second.headers.get("x-sidegate-cache", "").startswith("hit")
    assert len(fake_openai.requests) == 2
    from fault_helpers import sync_redis

    r = sync_redis(gw)
    for k in r.scan_iter(count=1000):
        if r.type(k) == b"string":
            assert OPENAI_PROVIDER_KEY.encode() not in (r.get(k) or b""), k
    # A clean answer is cached (the check above is not vacuous).
    send(gw, case, text=text + " clean")
    time.sleep(0.5)
    assert send(gw, case, text=text + " clean").headers.get("x-sidegate-cache", "").startswith("hit")


def test_access_log_keeps_the_request_id_and_user_agent(gw, fake_openai):
    """The upstream filters change the header map the access log reads: these two stay on every
    lane (and reach the provider, which is harmless and helps correlate a support ticket)."""
    import time
    import uuid

    rids = {}
    for case in (CASES[0], CASES[4]):  # direct; full or try
        rid = rids[case.model] = f"hyg-{uuid.uuid4().hex[:12]}"
        r = send(gw, case, {"x-request-id": rid, "user-agent": "hygiene-test/1.0"})
        assert r.status_code == 200, r.text
        assert fake_openai.requests[-1].headers["x-request-id"] == rid
        assert fake_openai.requests[-1].headers["user-agent"] == "hygiene-test/1.0"
    deadline = time.monotonic() + 15  # Envoy flushes its stdout access log every 10 s
    while time.monotonic() < deadline:
        entries = [orjson.loads(ln[ln.index("{"):]) for ln in gw.logs().splitlines()
                   if '"request_id"' in ln and any(rid in ln for rid in rids.values())]  # fmt: skip
        if len(entries) == len(rids):
            for e in entries:
                assert e["request_id"] == rids[e["model"]] and e["user_agent"] == "hygiene-test/1.0", e
            return
        time.sleep(0.2)
    raise AssertionError("no access log entries with the request ids")

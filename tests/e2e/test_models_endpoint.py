"""`GET /v1/models` and `GET /v1/models/{id}` through a real Envoy on both fronts, with the official
SDKs as clients: the models the key may use, in OpenAI's shape or Anthropic's, answered by the
gateway itself (no provider call, no quota, no ledger record)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from harness import FRONT_SERVICES, Stack, front_stack

pytestmark = pytest.mark.e2e
ALL = ["claude-haiku", "gpt-4o", "gpt-4o-mini"]


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from front_stack(request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url)


def _openai(gw: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0)


def _anthropic(gw: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)


def test_openai_sdk_lists_the_models_its_key_may_use(gw: Stack) -> None:
    assert sorted(m.id for m in _openai(gw, gw.keys["acme"].key).models.list()) == ALL
    limited = _openai(gw, gw.keys["acme-limited"].key)
    assert [m.id for m in limited.models.list()] == ["gpt-4o-mini"]
    one = limited.models.retrieve("gpt-4o-mini")
    assert (one.id, one.object, one.owned_by) == ("gpt-4o-mini", "model", "sidegate") and one.created > 0
    with pytest.raises(openai.NotFoundError) as err:  # allowed elsewhere, not to this key: it does not exist
        limited.models.retrieve("gpt-4o")
    assert err.value.body["code"] == "model_not_found"


def test_anthropic_sdk_lists_pages_and_retrieves(gw: Stack) -> None:
    client = _anthropic(gw, gw.keys["globex"].key)
    assert [m.id for m in client.models.list()] == ALL  # every page, through the SDK's cursor
    page = client.models.list(limit=2)
    assert [m.id for m in page.data] == ALL[:2] and page.has_more and page.last_id == ALL[1]
    nxt = client.models.list(limit=2, after_id=page.last_id)
    assert [m.id for m in nxt.data] == ALL[2:] and not nxt.has_more
    info = client.models.retrieve("claude-haiku")
    assert (info.id, info.type, info.display_name) == ("claude-haiku", "model", "claude-haiku")
    with pytest.raises(anthropic.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.body["error"]["type"] == "not_found_error"


def test_refusals_in_the_callers_format(gw: Stack) -> None:
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:
        r = c.get("/v1/models")  # no key
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = c.get("/v1/models", headers={"x-api-key": "sgk_nope", "anthropic-version": "2023-06-01"})
        assert r.status_code == 401 and r.json()["type"] == "error"  # Anthropic's shape
        r = c.post("/v1/models", headers={"authorization": f"Bearer {gw.keys['acme'].key}"}, json={})
        assert r.status_code == 405 and "use GET" in r.json()["error"]["message"]
        r = c.get("/v1/models?limit=0", headers={"x-api-key": gw.keys["acme"].key, "anthropic-version": "2023-06-01"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = c.get("/v1/nope", headers={"authorization": f"Bearer {gw.keys['acme'].key}"})
        assert r.status_code == 404 and "GET /v1/models" in r.json()["error"]["message"]


def test_a_list_asks_no_provider_and_is_not_usage(gw: Stack, fake_openai, fake_anthropic) -> None:
    """The model list is no completion, not even refused: after three lists, a refused list and a
    refused completion, the ledger holds exactly one more record, the completion's (waited for:
    records are written in batches, a list's would have been written with or before it)."""
    seen = (len(fake_openai.requests), len(fake_anthropic.requests))
    before = len(gw.ledger())
    auth = {"authorization": f"Bearer {gw.keys['acme'].key}"}
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:
        for _ in range(3):
            assert c.get("/v1/models", headers=auth).status_code == 200
        assert c.post("/v1/models", headers=auth, json={}).status_code == 405
        assert c.post("/v1/chat/completions", headers=auth, json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).status_code == 400
    deadline = time.monotonic() + 10
    while len(gw.ledger()) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    records = gw.ledger()[before:]
    assert [(r.status, r.model) for r in records] == [(400, "nope")]
    assert (len(fake_openai.requests), len(fake_anthropic.requests)) == seen  # no provider asked

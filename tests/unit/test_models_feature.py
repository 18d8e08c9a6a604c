"""The model list the gateway answers itself: shapes, the key's allow-list, Anthropic's cursors."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from sidegate import config
from sidegate.core.context import RequestContext
from sidegate.core.intake import open_request
from sidegate.errors import GatewayError
from sidegate.features.models import ModelsFeature

CFG = config.parse({
    "providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
    "models": {m: {"routes": [{"provider": "p"}]} for m in ("a", "b", "c", "d")},
}, env={})  # fmt: skip
FEATURE = ModelsFeature(CFG, created=1_700_000_000)


def ask(path: str, allowed: tuple[str, ...] = ("*",), anthropic: bool = False, method: str = "GET") -> dict:
    headers = {"anthropic-version": "2023-06-01"} if anthropic else {}
    ctx = open_request(path, method, headers, tenant="t", allowed_models=allowed)
    assert isinstance(ctx, RequestContext)
    reply = asyncio.run(FEATURE.on_request(ctx))
    assert reply is not None and reply.status == 200
    return orjson.loads(reply.body)


def test_openai_shape_and_the_keys_allow_list():
    assert ask("/v1/models") == {"object": "list", "data": [
        {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "sidegate"} for m in "abcd"]}  # fmt: skip
    assert [m["id"] for m in ask("/v1/models", ("b", "zz"))["data"]] == ["b"]
    assert ask("/v1/models/c")["id"] == "c"


def test_anthropic_shape_and_cursors():
    page = ask("/v1/models?limit=2", anthropic=True)
    assert [m["id"] for m in page["data"]] == ["a", "b"] and page["has_more"] and page["last_id"] == "b"
    assert page["data"][0] == {"type": "model", "id": "a", "display_name": "a", "created_at": "2023-11-14T22:13:20Z"}
    after = ask("/v1/models?limit=2&after_id=b", anthropic=True)
    assert [m["id"] for m in after["data"]] == ["c", "d"] and not after["has_more"]
    before = ask("/v1/models?limit=1&before_id=c", anthropic=True)
    assert [m["id"] for m in before["data"]] == ["b"] and before["has_more"]


@pytest.mark.parametrize(("path", "allowed", "method", "status"), [
    ("/v1/models/b", ("a",), "GET", 404),  # not the key's: does not exist for it
    ("/v1/models/zz", ("*",), "GET", 404),
    ("/v1/models", ("*",), "POST", 405),
])  # fmt: skip
def test_refusals(path, allowed, method, status):
    ctx = open_request(path, method, {}, tenant="t", allowed_models=allowed)
    assert isinstance(ctx, RequestContext)
    with pytest.raises(GatewayError) as err:
        asyncio.run(FEATURE.on_request(ctx))
    assert err.value.status == status


"""Embeddings to a Gemini API provider without Envoy: the route admits an OpenAI-or-Gemini chain,
the per-try stage sends `batchEmbedContents` with the key in `x-goog-api-key`, the answer comes back
in OpenAI's list (float or base64), usage is the gateway's count, errors in OpenAI's format."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import orjson
import pytest

from sidegate import config
from sidegate.app import App, default_features
from sidegate.core.completion import Completion
from sidegate.core.context import Reply, RequestContext
from sidegate.core.intake import open_request
from sidegate.core.pipeline import Forward
from sidegate.core.tries import TryStage
from sidegate.errors import GatewayError
from sidegate.features.route.feature import RouteFeature
from sidegate.translate.base import TranslateOptions
from sidegate.translate.embeddings_gemini import GeminiEmbeddings

CFG = config.parse({
    "services": {"auth": "ext_authz"},  # the tenant comes with the request, as from ext_authz
    "providers": {
        "oai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K1"},
        "gem": {"api": "gemini", "base_url": "https://generativelanguage.googleapis.com", "api_key_env": "K3"},
        "ant": {"api": "anthropic", "base_url": "http://127.0.0.1:11", "api_key_env": "K2"},
    },
    "models": {
        "gem-emb": {"routes": [{"provider": "gem", "model": "text-embedding-004"}, {"provider": "oai", "model": "text-embedding-3-small"}]},
        "gem-then-claude": {"routes": [{"provider": "gem"}, {"provider": "ant"}]},
        "gem-only": {"routes": [{"provider": "gem", "model": "text-embedding-004"}]},
    },
}, env={"K1": "sk-1", "K2": "sk-2", "K3": "gk-secret-3"})  # fmt: skip
APP = App(CFG, default_features(CFG))
META = {"api": "openai", "model": "gem-emb", "endpoint": "embeddings", "stream": False}
ANSWER = orjson.dumps({"embeddings": [{"values": [0.5, -0.25]}, {"values": [1.0, 0.0]}]})


def run(body: dict[str, Any]) -> Forward | Reply:
    ctx = open_request("/v1/embeddings", "POST", {}, tenant="t", key_id="k", allowed_models=("*",))
    assert isinstance(ctx, RequestContext)
    ctx.raw_body = orjson.dumps(body)
    return asyncio.run(APP.gateway.run(ctx))


def test_the_route_admits_gemini_api_chains_only() -> None:
    assert isinstance(run({"model": "gem-emb", "input": "a"}), Forward)
    out = run({"model": "gem-then-claude", "input": "a"})
    assert isinstance(out, Reply) and out.status == 400
    err = orjson.loads(out.body)["error"]
    assert err["code"] == "model_not_supported" and "'ant'" in err["message"]
    # Vertex AI's Gemini embeds through `:predict`, which no pair speaks (the route alone: the
    # Vertex credential needs no App here)
    vertex = config.parse({
        "providers": {"vertex": {"api": "gemini", "base_url": "https://us-central1-aiplatform.googleapis.com",
                                 "vertex": {"project": "p1", "location": "us-central1"}}},
        "models": {"vertex-emb": {"routes": [{"provider": "vertex", "model": "text-embedding-004"}]}},
    })  # fmt: skip
    assert RouteFeature(vertex).not_embedding == {"vertex-emb": "vertex"}


def test_a_try_sends_batch_embed_contents_with_the_gemini_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K3", "gk-secret-3")
    done: list[Completion] = []
    stage = TryStage(CFG, [done.append])
    t = stage.start_try(META, "provider.gem", 1)
    assert not t.body_unchanged
    body, changes = t.request_body(
        orjson.dumps({"model": "gem-emb", "input": ["hello", "a b c d e"], "dimensions": 2})
    )
    assert changes.set[":path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    headers = t.request_headers([])
    assert headers.set["x-goog-api-key"] == "gk-secret-3" and "authorization" not in headers.set
    assert orjson.loads(body) == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 2},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a b c d e"}]}, "outputDimensionality": 2},
    ]}  # fmt: skip
    t.response_headers(200, {":status": "200", "content-type": "application/json"})
    out = orjson.loads(t.response_body(ANSWER))
    assert out["object"] == "list" and out["model"] == "text-embedding-004"
    assert [d["embedding"] for d in out["data"]] == [[0.5, -0.25], [1.0, 0.0]]
    assert [d["index"] for d in out["data"]] == [0, 1]
    # ceil(5 / 4) + ceil(9 / 4): Gemini reports none, the gateway's count is answered and charged
    assert out["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert done[0].usage is not None and done[0].usage.total_tokens == 5


def test_base64_is_openais_little_endian_float32() -> None:
    pair = GeminiEmbeddings()
    pair.request(
        {"model": "m", "input": "x", "encoding_format": "base64"}, model="m", opts=TranslateOptions()
    )
    out, usage = pair.response(ANSWER)
    first = orjson.loads(out)["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(first)) == (0.5, -0.25)
    assert usage is not None and usage.input_tokens == 1


@pytest.mark.parametrize(
    ("inp", "words"),
    [([1, 2, 3], "text only"), ([[1, 2], [3]], "text only"), (["x"] * 101, "at most 100")],
)
def test_inputs_gemini_cannot_take_get_a_clear_400(inp: Any, words: str) -> None:
    with pytest.raises(GatewayError) as err:
        GeminiEmbeddings().request({"model": "m", "input": inp}, model="m", opts=TranslateOptions())
    assert err.value.status == 400 and words in str(err.value) and err.value.param == "input"


def test_googles_errors_in_openais_format_and_a_bad_key_is_the_gateways(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("K3", "gk-secret-3")
    pair = GeminiEmbeddings()
    status, body = pair.error(
        429, b'{"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}'
    )
    assert status == 429 and orjson.loads(body)["error"]["message"] == "Quota exceeded."
    bad_key = orjson.dumps({"error": {"code": 400, "message": "API key not valid: gk-secret-3.",
                                      "status": "INVALID_ARGUMENT", "details": [{"reason": "API_KEY_INVALID"}]}})  # fmt: skip
    stage = TryStage(CFG, [])
    t = stage.start_try({**META, "model": "gem-only"}, "provider.gem", 1)  # the chain's last try
    t.request_body(orjson.dumps({"model": "gem-only", "input": "a"}))
    t.response_headers(400, {":status": "400", "content-type": "application/json"})
    out = t.response_body(bad_key)
    assert (
        t.status == 502 and b"gk-secret" not in out and "rejected the gateway's credentials" in out.decode()
    )

"""What both fronts do before the pipeline (sidegate/core/intake.py), whatever carries the request."""

from __future__ import annotations

import orjson

from sidegate.core.context import Reply, RequestContext
from sidegate.core.intake import access_log_fields, client_internal_headers, open_request
from sidegate.errors import Api


def test_an_unknown_path_is_a_404_in_the_clients_format():
    for path, api_shape in (("/v1/audio/speech?x=1", "error"), ("/v1/messages/batches", "type")):
        reply = open_request(path, "POST", {})
        assert isinstance(reply, Reply) and reply.status == 404
        doc = orjson.loads(reply.body)
        assert api_shape in doc and "Unknown path" in str(doc) and "?x=1" not in str(doc)


def test_a_served_path_opens_its_context_with_the_anthropic_headers_kept():
    headers = {"x-request-id": "r1", "anthropic-version": "2023-06-01", "anthropic-beta": "b1"}
    ctx = open_request("/v1/messages", "POST", headers, source="10.0.0.1", tenant="acme", allowed_models=("*",))
    assert isinstance(ctx, RequestContext) and ctx.api is Api.ANTHROPIC and ctx.request_id == "r1"
    assert ctx.meta == {"anthropic_version": "2023-06-01", "anthropic_beta": "b1"}
    assert (ctx.source, ctx.tenant, ctx.allowed_models) == ("10.0.0.1", "acme", ("*",))
    chat = open_request("/v1/chat/completions?api-version=1", "POST", headers)
    assert isinstance(chat, RequestContext) and chat.api is Api.OPENAI and chat.meta == {}


def test_internal_headers_from_the_client_and_the_access_log_fields():
    headers = {"x-sidegate-route": "evil", "x-sidegate-source": "1.2.3.4", "authorization": "k"}
    assert client_internal_headers(headers) == ["x-sidegate-route", "x-sidegate-source"]
    assert client_internal_headers(headers, ("x-sidegate-source",)) == ["x-sidegate-route"]
    fields = access_log_fields({"tenant": "acme", "model": "m", "stream": True, "cache": "miss"})
    assert fields == {"x-sidegate-tenant": "acme", "x-sidegate-key-id": "", "x-sidegate-model": "m",
                      "x-sidegate-stream": "true", "x-sidegate-cache": "miss"}  # fmt: skip


def test_an_endpoint_no_feature_serves_is_a_404_listing_what_is_served():
    import asyncio

    from sidegate.core.pipeline import Gateway

    ctx = open_request("/v1/embeddings", "POST", {})
    assert isinstance(ctx, RequestContext) and ctx.endpoint == "embeddings"
    reply = asyncio.run(Gateway(features=[]).run(ctx))
    assert isinstance(reply, Reply) and reply.status == 404 and b"POST /v1/responses" in reply.body

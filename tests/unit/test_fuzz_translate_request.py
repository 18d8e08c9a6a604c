"""Fuzz every translator's request(): bodies that pass ParseFeature either translate to a provider
request the provider's SDK types accept, or are refused with a 400 GatewayError."""

from __future__ import annotations

import math
from typing import Any

import orjson
from fuzz_helpers import anthropic_bodies, dumps, fuzz, openai_bodies, parse_or_error
from hypothesis import given, note
from translate_helpers import validate_request

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator

MODEL = "upstream-model"


def _translate(inbound: Api, upstream: Api, body: dict[str, Any]) -> dict[str, Any] | None:
    """The provider body as JSON, or None when the translator refused with a well-formed 400."""
    note(f"body={body!r}")
    ctx = parse_or_error(inbound, dumps(body))
    if ctx is None:
        return None
    tr = get_translator(inbound, upstream)
    try:
        preq = tr.request(ctx.body, model=MODEL, opts=TranslateOptions())
    except GatewayError as err:
        assert err.status == 400 and err.message.strip(), err
        return None
    assert preq.path in ("/v1/chat/completions", "/v1/messages")
    out = orjson.loads(preq.body)
    assert isinstance(out, dict) and out["model"] == MODEL
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_sampling(out: dict[str, Any]) -> None:
    """Keys validate_request cannot type-check (not declared in the SDK TypedDicts)."""
    for key in ("temperature", "top_p"):
        if key in out:
            assert _is_number(out[key]), (key, out[key])
    if "top_k" in out:
        assert isinstance(out["top_k"], int) and not isinstance(out["top_k"], bool), out["top_k"]


@fuzz(300)
@given(body=openai_bodies)
def test_openai_to_anthropic(body: dict[str, Any]) -> None:
    out = _translate(Api.OPENAI, Api.ANTHROPIC, body)
    if out is not None:
        validate_request(Api.ANTHROPIC, out)
        _check_sampling(out)
        assert isinstance(out["max_tokens"], int) and not isinstance(out["max_tokens"], bool)


@fuzz(300)
@given(body=anthropic_bodies)
def test_anthropic_to_openai(body: dict[str, Any]) -> None:
    out = _translate(Api.ANTHROPIC, Api.OPENAI, body)
    if out is not None:
        validate_request(Api.OPENAI, out)
        _check_sampling(out)


@fuzz(150)
@given(body=openai_bodies)
def test_openai_passthrough(body: dict[str, Any]) -> None:
    out = _translate(Api.OPENAI, Api.OPENAI, body)
    if out is not None and out.get("stream"):
        assert out["stream_options"]["include_usage"]  # forced on (or the client's own truthy value)


@fuzz(150)
@given(body=anthropic_bodies)
def test_anthropic_passthrough(body: dict[str, Any]) -> None:
    _translate(Api.ANTHROPIC, Api.ANTHROPIC, body)

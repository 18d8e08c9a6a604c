"""Fuzz every translator's response() and error(): provider answers with wrong types, garbage bytes
and odd statuses give a client-format result, or a 502 GatewayError; never another exception."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fuzz_helpers import (
    anthropic_messages,
    dumps,
    error_bodies,
    fuzz,
    json_values,
    openai_completions,
    statuses,
)
from hypothesis import given
from hypothesis import strategies as st
from translate_helpers import validate_error, validate_response

from sidegate.errors import Api, GatewayError
from sidegate.translate import Usage, get_translator

PAIRS = [
    (Api.OPENAI, Api.ANTHROPIC),
    (Api.ANTHROPIC, Api.OPENAI),
    (Api.OPENAI, Api.OPENAI),
    (Api.ANTHROPIC, Api.ANTHROPIC),
]
IDS = [f"{a.value}-to-{b.value}" for a, b in PAIRS]


def check_usage(usage: Usage | None) -> None:
    """Usage feeds quotas, metrics and the ledger: plain non-negative ints only."""
    if usage is None:
        return
    for value in (usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.cache_creation_tokens):
        assert type(value) is int and 0 <= value < 2**63, usage
    assert usage.cached_tokens + usage.cache_creation_tokens <= usage.input_tokens, usage
    assert type(usage.total_tokens) is int


def respond(inbound: Api, upstream: Api, body: bytes) -> tuple[bytes, Usage | None] | None:
    """The translated response, or None after checking the refusal is a 502 GatewayError."""
    try:
        out, usage = get_translator(inbound, upstream).response(body)
    except GatewayError as err:
        assert err.status == 502 and err.message.strip(), err
        return None
    check_usage(usage)
    if inbound is not upstream:
        validate_response(inbound, orjson.loads(out))
    else:
        assert out == body  # passthrough: the provider's bytes
    return out, usage


@pytest.mark.parametrize(("inbound", "upstream"), PAIRS, ids=IDS)
@fuzz(60)
@given(body=st.binary(max_size=100) | json_values.map(dumps))
def test_response_garbage(inbound: Api, upstream: Api, body: bytes) -> None:
    result = respond(inbound, upstream, body)
    if result is None:
        return
    assert isinstance(orjson.loads(body), dict)  # only JSON objects are accepted as a response


@fuzz(200)
@given(msg=anthropic_messages)
def test_response_from_anthropic(msg: dict[str, Any]) -> None:
    raw = dumps(msg)
    assert respond(Api.OPENAI, Api.ANTHROPIC, raw) is not None
    assert respond(Api.ANTHROPIC, Api.ANTHROPIC, raw) is not None


@fuzz(200)
@given(body=openai_completions)
def test_response_from_openai(body: dict[str, Any]) -> None:
    raw = dumps(body)
    assert respond(Api.ANTHROPIC, Api.OPENAI, raw) is not None
    assert respond(Api.OPENAI, Api.OPENAI, raw) is not None


@pytest.mark.parametrize(("inbound", "upstream"), PAIRS, ids=IDS)
@fuzz(80)
@given(status=statuses, body=error_bodies)
def test_error(inbound: Api, upstream: Api, status: int, body: bytes) -> None:
    out_status, out = get_translator(inbound, upstream).error(status, body)
    assert 400 <= out_status <= 599
    validate_error(inbound, out)
    if not 400 <= status <= 599:
        assert out_status == 502

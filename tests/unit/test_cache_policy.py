"""Cacheability of responses and the stored value codec."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from sidegate.errors import Api
from sidegate.features.cache import CachePolicy, codec, refusal_reason

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_helpers import anthropic_response, anthropic_tool_response, openai_response, openai_tool_response

P = CachePolicy(exact=True)
TOOLS = CachePolicy(exact=True, cache_tool_calls=True)


def test_openai_cacheable():
    assert refusal_reason(Api.OPENAI, openai_response(), P) is None
    assert refusal_reason(Api.OPENAI, openai_response(finish="length"), P) is None
    assert (
        refusal_reason(Api.OPENAI, openai_response(finish="content_filter"), P)
        == "finish_reason:content_filter"
    )
    assert refusal_reason(Api.OPENAI, openai_tool_response(), P) == "finish_reason:tool_calls"
    assert refusal_reason(Api.OPENAI, openai_tool_response(), TOOLS) is None
    assert refusal_reason(Api.OPENAI, {"error": {"message": "x"}}, P) == "error"
    assert refusal_reason(Api.OPENAI, openai_response(choices=[]), P) == "no_choices"
    assert refusal_reason(Api.OPENAI, anthropic_response(), P) == "not_a_completion"


def test_anthropic_cacheable():
    assert refusal_reason(Api.ANTHROPIC, anthropic_response(), P) is None
    assert refusal_reason(Api.ANTHROPIC, anthropic_response(stop="max_tokens"), P) is None
    assert refusal_reason(Api.ANTHROPIC, anthropic_response(stop="refusal"), P) == "stop_reason:refusal"
    assert refusal_reason(Api.ANTHROPIC, anthropic_response(stop="pause_turn"), P) == "stop_reason:pause_turn"
    assert refusal_reason(Api.ANTHROPIC, anthropic_tool_response(), P) == "stop_reason:tool_use"
    assert refusal_reason(Api.ANTHROPIC, anthropic_tool_response(), TOOLS) is None
    assert refusal_reason(Api.ANTHROPIC, {"type": "error", "error": {"type": "x"}}, P) == "error"


@pytest.mark.parametrize("size", [0, 10, 1024, 1025, 200_000])
def test_codec_round_trip(size):
    body = b'{"a":"' + b"x" * size + b'"}'
    value = codec.encode(body, 123.5)
    if size > 2000:
        assert len(value) < len(body)  # compressed
    assert codec.decode(value) == (body, 123.5)


def test_codec_rejects_garbage():
    for bad in (b"", b"Q" + b"\0" * 8 + b"{}", b"Z" + b"\0" * 8 + b"not zlib"):
        with pytest.raises(ValueError):
            codec.decode(bad)


def test_policy_validation():
    assert not CachePolicy().enabled
    with pytest.raises(ValidationError):
        CachePolicy(threshold=1.5)
    with pytest.raises(ValidationError):
        CachePolicy(unknown=1)

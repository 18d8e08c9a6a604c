"""Fuzz ParseFeature: any body either parses or is refused with a 400/405/413 GatewayError."""

from __future__ import annotations

import pytest
from fuzz_helpers import anthropic_bodies, dumps, fuzz, json_values, openai_bodies, parse_or_error, run_parse
from hypothesis import given
from hypothesis import strategies as st

from sidegate.errors import Api, GatewayError

apis = st.sampled_from([Api.OPENAI, Api.ANTHROPIC])


def _check_parsed(api: Api, raw: bytes, **kw: object) -> None:
    ctx = parse_or_error(api, raw, **kw)
    if ctx is None:
        return
    assert isinstance(ctx.body, dict) and ctx.model == ctx.body["model"] and ctx.model
    assert isinstance(ctx.body["messages"], list) and ctx.body["messages"]
    assert isinstance(ctx.stream, bool) and isinstance(ctx.client_wants_usage, bool)


@fuzz(150)
@given(api=apis, raw=st.binary(max_size=200))
def test_arbitrary_bytes(api: Api, raw: bytes) -> None:
    _check_parsed(api, raw)


@fuzz(150)
@given(api=apis, value=json_values)
def test_arbitrary_json(api: Api, value: object) -> None:
    _check_parsed(api, dumps(value))


@fuzz(200)
@given(body=openai_bodies)
def test_almost_valid_openai(body: dict) -> None:
    _check_parsed(Api.OPENAI, dumps(body))


@fuzz(200)
@given(body=anthropic_bodies)
def test_almost_valid_anthropic(body: dict) -> None:
    _check_parsed(Api.ANTHROPIC, dumps(body))


@fuzz(100)
@given(api=apis, body=openai_bodies | anthropic_bodies, data=st.data())
def test_corrupted_bytes(api: Api, body: dict, data: st.DataObject) -> None:
    """A valid body with bytes inserted or cut: invalid UTF-8, truncation, stray bytes."""
    raw = bytearray(dumps(body))
    pos = data.draw(st.integers(0, len(raw)))
    mode = data.draw(st.sampled_from(["insert", "truncate", "replace"]))
    junk = data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\ud800", b"}", b'"']))
    if mode == "insert":
        raw[pos:pos] = junk
    elif mode == "truncate":
        del raw[pos:]
    else:
        raw[pos : pos + len(junk)] = junk
    _check_parsed(api, bytes(raw))


@fuzz(30)
@given(api=apis, depth=st.integers(1, 3000), where=st.sampled_from(["top", "content", "tools"]))
def test_deep_nesting(api: Api, depth: int, where: str) -> None:
    nested = b"[" * depth + b"]" * depth
    if where == "top":
        raw = nested
    elif where == "content":
        raw = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":' + nested + b"}]}"
    else:
        raw = b'{"model":"m","messages":[{"role":"user","content":"x"}],"tools":' + nested + b"}"
    _check_parsed(api, raw)


@fuzz(10)
@given(api=apis, n=st.integers(0, 20000), limit=st.sampled_from([1024, 8 * 1024 * 1024]))
def test_huge_arrays_and_size_limit(api: Api, n: int, limit: int) -> None:
    raw = b'{"model":"m","messages":[' + b",".join([b'{"role":"user","content":"x"}'] * n) + b"]}"
    ctx = parse_or_error(api, raw, limit=limit)
    if len(raw) > limit:
        assert ctx is None
        with pytest.raises(GatewayError) as info:
            run_parse(api, raw, limit=limit)
        assert info.value.status == 413


@fuzz(30)
@given(api=apis, method=st.sampled_from(["GET", "PUT", "DELETE", "", "post", "PATCH"]), body=openai_bodies)
def test_wrong_method(api: Api, method: str, body: dict) -> None:
    with pytest.raises(GatewayError) as info:
        run_parse(api, dumps(body), method=method)
    assert info.value.status == 405 and info.value.message

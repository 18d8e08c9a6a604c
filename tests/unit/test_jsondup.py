"""Duplicate keys in JSON bodies: the cheap colon count and the exact check behind it."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidegate import jsondup
from sidegate.core.context import RequestContext
from sidegate.errors import Api, GatewayError
from sidegate.features.parse import ParseFeature
from sidegate.jsondup import _colons, duplicate_key


def _dup(raw: bytes) -> str | None:
    return duplicate_key(raw, orjson.loads(raw))


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"model":"a","model":"b"}', "model"),
        (b'{"model":"gpt-4o","messages":[],"mod\\u0065l":"gpt-4"}', "model"),  # escaped spelling
        (b'{"m":[{"role":"user","content":"a","content":"b"}]}', "content"),  # nested, in an array
        (b'[{"a":1},{"b":{"c":{"d":1,"d":1}}}]', "d"),  # same value twice is still a duplicate
        (b'{"a:b":1,"a\\u003ab":2}', "a:b"),  # colon in the key, once escaped
        (b'{"x":{"k":"v:v:v"},"x":{}}', "x"),  # the dropped value holds colons
        (b'{"\\u00e9":1,"\xc3\xa9":2}', "\u00e9"),
        (b'{"a":1,"b":"\\\\u003a","a":2}', "a"),  # a literal \\u003a text besides a duplicate
    ],
)
def test_duplicates_are_named(raw: bytes, key: str) -> None:
    assert _dup(raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"a","messages":[{"role":"user","content":"time: 12:30 :::"}]}',
        b'{"a":"\\u003a\\u003A","b":{"a":1},"c":[{"a":1},{"a":2}]}',  # same key in sibling objects
        b'{"text":"\\\\u003a is how JSON spells a colon"}',  # literal text: counts disagree, no dup
        b'{"n":"\\u0030\\u003B","m":1}',  # other \\u003X escapes (not colons)
        b'{"model":"m","Model":"n","mod\\u0065L":"o"}',  # keys are case-sensitive
        b'{"\\u00e9":1,"e\\u0301":2}',  # different code points (no normalisation)
        b'{}',
        b'[1,2,{"":0}]',
    ],
)
def test_no_false_positives(raw: bytes) -> None:
    assert _dup(raw) is None


def test_cheap_count_matches_without_duplicates_and_exceeds_with() -> None:
    raw = b'{"a":"x:y\\u003a","b":[{"c":1}]}'
    assert _colons(raw) == orjson.dumps(orjson.loads(raw)).count(b":")
    raw = b'{"a":"x:y\\u003a","b":[{"c":1,"c":2}]}'
    assert _colons(raw) > orjson.dumps(orjson.loads(raw)).count(b":")


# -- generated bodies: random trees with random duplicates and random escaping ----------------------
_keys = st.sampled_from(["model", "content", "a:b", ":", "é", "\\", 'q"', "k\u003a", "role", ""])
_scalars = st.one_of(st.integers(-(10**6), 10**6), st.booleans(), st.none(),
                     st.text(alphabet=st.sampled_from(list("ab:\\\"é\n\u2028u0")), max_size=8))  # fmt: skip
_trees = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(st.tuples(_keys, inner), max_size=4).map(tuple)),
    max_leaves=20,
)


def _enc_str(s: str, rnd: random.Random) -> str:
    out = []
    for ch in s:
        if (ch == ":" and rnd.random() < 0.3) or rnd.random() < 0.1:
            code = f"{ord(ch):04x}" if ord(ch) < 0x10000 else None
            if code:
                out.append("\\u" + (code.upper() if rnd.random() < 0.5 else code))
                continue
        out.append(json.dumps(ch, ensure_ascii=False)[1:-1])
    return '"' + "".join(out) + '"'


def _enc(node: Any, rnd: random.Random) -> str:
    if isinstance(node, tuple):  # an object as written: pairs, duplicates kept
        return "{" + ",".join(f"{_enc_str(k, rnd)}:{_enc(v, rnd)}" for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_enc(v, rnd) for v in node) + "]"
    if isinstance(node, str):
        return _enc_str(node, rnd)
    return json.dumps(node)


def _has_dup(node: Any) -> bool:
    if isinstance(node, tuple):
        names = [k for k, _ in node]
        return len(set(names)) < len(names) or any(_has_dup(v) for _, v in node)
    if isinstance(node, list):
        return any(_has_dup(v) for v in node)
    return False


@settings(max_examples=400, deadline=None)
@given(tree=_trees, seed=st.integers(0, 2**32))
def test_generated_bodies(tree: Any, seed: int) -> None:
    raw = _enc(tree, random.Random(seed)).encode()
    found = _dup(raw)
    assert (found is not None) == _has_dup(tree), raw
    cheap, kept = _colons(raw), orjson.dumps(orjson.loads(raw)).count(b":")
    assert cheap > kept if _has_dup(tree) else cheap >= kept
    if not _has_dup(tree) and b"\\\\u003" not in raw:
        assert cheap == kept  # the fast path is taken


# -- the parse stage --------------------------------------------------------------------------------
@pytest.mark.parametrize("api", [Api.OPENAI, Api.ANTHROPIC])
def test_parse_stage_refuses_duplicates_naming_the_key(api: Api) -> None:
    raw = b'{"model":"cheap","messages":[{"role":"user","content":"hi"}],"model":"dear"}'
    ctx = RequestContext(api=api, method="POST", path="/v1/chat/completions", headers={}, raw_body=raw)
    with pytest.raises(GatewayError) as err:
        asyncio.run(ParseFeature().on_request(ctx))
    assert err.value.status == 400 and "'model'" in err.value.message and "dear" not in err.value.message


def _body(size: int) -> bytes:
    """A chat body like real ones: turns of prose with newlines, quotes, URLs and times."""
    turn = "Step {i}: see https://example.com/a?b=c at 12:30.\nThe answer is {j}; a \"key\": value is fine.\n" * 3
    msgs: list[dict[str, str]] = []
    while len(orjson.dumps(msgs)) < size - 100:
        msgs.append({"role": "user" if len(msgs) % 2 == 0 else "assistant", "content": turn.format(i=len(msgs), j=7 * len(msgs))})
    return orjson.dumps({"model": "gpt-4o-mini", "messages": msgs, "temperature": 0.2, "max_tokens": 256})


@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "go-escaped"])
@pytest.mark.parametrize("size", [2_000, 500_000])
def test_clean_bodies_take_the_fast_path(size: int, escaped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real bodies never pay the second parse (its cost: sidegate/jsondup.py's docstring), also
    those of Go and Java clients, whose encoders write `<` and `>` as \\u003c and \\u003e."""
    raw = _body(size)
    if escaped:
        raw = raw.replace(b"see https", b"see \\u003chttps").replace(b"12:30.", b"12:30.\\u003e")
        assert raw.count(b"\\u003c") > 1

    def second_parse(*_a: object, **_k: object) -> None:
        raise AssertionError("the exact check ran on a body without duplicates")

    monkeypatch.setattr(jsondup.json, "loads", second_parse)
    assert duplicate_key(raw, orjson.loads(raw)) is None


@pytest.mark.parametrize("depth", [1000, 1023])
def test_a_duplicate_after_a_nest_too_deep_for_the_exact_check_is_refused(depth: int) -> None:
    """orjson takes up to 1024 levels, the standard parser ~1000: a nest between the two used to
    end the exact check with "no duplicate" and let the second `model` through."""
    nest = b"[" * depth + b"]" * depth
    raw = b'{"model":"cheap","messages":[{"role":"user","content":"hi"}],"x":' + nest + b',"model":"dear"}'
    with pytest.raises(jsondup.Undecided):
        _dup(raw)
    ctx = RequestContext(api=Api.OPENAI, method="POST", path="/v1/chat/completions", headers={}, raw_body=raw)
    with pytest.raises(GatewayError) as err:
        asyncio.run(ParseFeature().on_request(ctx))
    assert err.value.status == 400 and "nested too deeply" in err.value.message

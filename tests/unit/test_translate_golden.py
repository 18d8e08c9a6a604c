"""Golden fixtures for every translator pair (tests/fixtures/translate/<pair>/<case>/).

Two checks per case. The reviewed expected files compare JSON bodies *parsed* (key order is not
part of the API contract: clients parse) and streams as exact bytes (event framing is). The pair's
``exact_bytes.json`` then locks every output to the exact bytes (key order and error messages
included), so a refactor of a translator is proven to change nothing at all.
Expected files are written and reviewed by hand; nothing here regenerates them.
Every produced payload is also validated with the provider SDKs' own types.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import translate_helpers as h

from sidegate.errors import Api, GatewayError
from sidegate.translate import get_translator, sse_error_event


def _load(path: Path):
    return json.loads(path.read_text())


def _params(kind: str):
    return pytest.mark.parametrize("case", h.cases(kind), ids=h.case_id)


def test_fixture_tree_is_complete():
    for pair in h.PAIRS:
        names = {p.name for p in (h.FIXTURES / pair).iterdir()}
        assert any(n.startswith("req_") for n in names), pair
        assert any(n.startswith("resp_") for n in names), pair
        assert any(n.startswith("stream_") for n in names), pair
        assert any(n.startswith("err_") for n in names), pair
    for case in h.cases():
        inputs = [
            f
            for f in ("request.json", "response.json", "stream.sse", "provider_error.json")
            if (case / f).exists()
        ]
        assert len(inputs) == 1, (case, inputs)


@_params("request.json")
def test_request(case: Path):
    inbound, upstream = h.PAIRS[case.parent.name]
    body = _load(case / "request.json")
    result = h.run_request(case)
    err_file = case / "expected_gateway_error.json"
    if err_file.exists():
        expected = _load(err_file)
        assert isinstance(result, GatewayError), result
        assert result.status == expected["status"]
        assert result.param == expected["param"]
        assert result.message and len(result.message) < 200
        return
    assert not isinstance(result, GatewayError), result.message
    h.validate_request(inbound, body)  # the fixture itself is a valid client request
    expected = _load(case / "expected_request.json")
    got = orjson.loads(result.body)
    assert {"path": result.path, "headers": result.headers, "body": got} == expected
    h.validate_request(upstream, got)


@_params("response.json")
def test_response(case: Path):
    inbound, upstream = h.PAIRS[case.parent.name]
    raw = (case / "response.json").read_bytes()
    h.validate_response(upstream, orjson.loads(raw))
    body, usage = h.run_response(case)
    got = orjson.loads(body)
    assert got == _load(case / "expected_response.json")
    assert h.usage_json(usage) == _load(case / "expected_usage.json")
    h.validate_response(inbound, got)
    if inbound is upstream:
        assert body is raw or body == raw  # passthrough: bytes untouched


@_params("stream.sse")
def test_stream(case: Path):
    inbound, upstream = h.PAIRS[case.parent.name]
    h.validate_stream(upstream, (case / "stream.sse").read_bytes().rsplit(b"\n\n", 1)[0] + b"\n\n")
    out, usage = h.run_stream(case)
    assert out == (case / "expected_stream.sse").read_bytes()
    assert h.usage_json(usage) == _load(case / "expected_usage.json")
    h.validate_stream(inbound, out)
    # finish() is idempotent and feed() after the end emits nothing.
    st = h.new_stream(case)
    st.feed((case / "stream.sse").read_bytes())
    st.finish()
    assert st.finish() == b""


@_params("provider_error.json")
def test_error(case: Path):
    inbound, _ = h.PAIRS[case.parent.name]
    status, body = h.run_error(case)
    expected = _load(case / "expected_error.json")
    assert {"status": status, "body": orjson.loads(body)} == expected
    h.validate_error(inbound, body)


@pytest.mark.parametrize("pair", sorted(h.PAIRS))
def test_exact_bytes(pair: str):
    expected = _load(h.FIXTURES / pair / "exact_bytes.json")
    got = {case.name: h.exact_record(case) for case in h.cases() if case.parent.name == pair}
    assert set(got) == set(expected), "a case was added or removed: add it to exact_bytes.json too"
    for name, record in got.items():
        assert record == expected[name], name


def test_registry_singletons():
    for inbound, upstream in h.PAIRS.values():
        tr = get_translator(inbound, upstream)
        assert tr is get_translator(inbound, upstream)
        assert (tr.inbound, tr.upstream) == (inbound, upstream)
    assert get_translator("openai", "anthropic") is get_translator(Api.OPENAI, Api.ANTHROPIC)


def test_sse_error_event_shapes():
    o = sse_error_event(Api.OPENAI, "boom")
    assert o == b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n'
    a = sse_error_event(Api.ANTHROPIC, "boom", "overloaded_error")
    assert a == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"boom"}}\n\n'
    )


def test_created_uses_clock():
    tr = get_translator(Api.OPENAI, Api.ANTHROPIC)
    case = h.FIXTURES / "openai_anthropic" / "resp_text"
    body, _ = tr.response((case / "response.json").read_bytes())
    assert orjson.loads(body)["created"] > 1_700_000_000

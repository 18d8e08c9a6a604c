"""Golden fixtures of the AWS Bedrock (Converse) pairs: tests/fixtures/translate/<client>_bedrock/.

The same checks as tests/unit/test_translate_golden.py (reviewed expected files compared parsed,
streams as exact bytes, every output locked by the pair's exact_bytes.json, client payloads
validated with the client SDKs' types), with Bedrock's sides validated against botocore's service
model (tests/bedrock_helpers.py) and provider streams given as the events their frames carry.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bedrock_helpers as b
import translate_helpers as h

from sidegate.errors import Api, GatewayError
from sidegate.translate import get_translator
from sidegate.translate.codecs.bedrock import response as bedrock_response


@pytest.fixture(autouse=True)
def _fixed_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bedrock_response, "new_id", b.IDS)


def _load(path: Path):
    return json.loads(path.read_text())


def _params(kind: str):
    return pytest.mark.parametrize("case", b.cases(kind), ids=h.case_id)


def test_fixture_tree_is_complete():
    for pair in b.PAIRS:
        names = {p.name for p in (b.FIXTURES / pair).iterdir()}
        for prefix in ("req_", "resp_", "stream_", "err_"):
            assert any(n.startswith(prefix) for n in names), (pair, prefix)
    for case in b.cases():
        assert len([f for f in b.INPUTS if (case / f).exists()]) == 1, case


@_params("request.json")
def test_request(case: Path):
    inbound = b.PAIRS[case.parent.name]
    body = _load(case / "request.json")
    result = h.run_request(case)
    err_file = case / "expected_gateway_error.json"
    if err_file.exists():
        expected = _load(err_file)
        assert isinstance(result, GatewayError), result
        assert (result.status, result.param) == (expected["status"], expected["param"])
        assert result.message and len(result.message) < 300
        return
    assert not isinstance(result, GatewayError), result.message
    h.validate_request(inbound, body)
    got = orjson.loads(result.body)
    assert {"path": result.path, "headers": result.headers, "body": got} == _load(
        case / "expected_request.json"
    )
    b.validate_request(result.path, got)
    assert b.botocore_request(result.path, got) == (result.path, got)  # what boto3 itself sends


@_params("response.json")
def test_response(case: Path):
    inbound = b.PAIRS[case.parent.name]
    b.validate(_load(case / "response.json"), "ConverseResponse")
    body, usage = h.run_response(case)
    got = orjson.loads(body)
    assert got == _load(case / "expected_response.json")
    assert h.usage_json(usage) == _load(case / "expected_usage.json")
    h.validate_response(inbound, got)


@_params("stream.json")
def test_stream(case: Path):
    inbound = b.PAIRS[case.parent.name]
    b.validate_stream_events(_load(case / "stream.json"))
    out, usage = h.run_stream(case)
    assert out == (case / "expected_stream.sse").read_bytes()
    assert h.usage_json(usage) == _load(case / "expected_usage.json")
    h.validate_stream(inbound, out)
    st = h.new_stream(case)  # finish() is idempotent and feed() after the end emits nothing
    st.feed(b.stream_bytes(case))
    st.finish()
    assert st.finish() == b""
    assert st.feed(b.stream_bytes(case)) == b""


@_params("stream.json")
def test_stream_split_anywhere(case: Path):
    """Frames cut at every few bytes (and one frame per chunk) give the same client stream."""
    whole = h.run_stream(case)
    data = b.stream_bytes(case)
    for size in (1, 7, 64):
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        assert h.run_stream(case, pieces) == whole, size
    assert h.run_stream(case, b.frames(_load(case / "stream.json"))) == whole


@_params("provider_error.json")
def test_error(case: Path):
    status, body = h.run_error(case)
    assert {"status": status, "body": orjson.loads(body)} == _load(case / "expected_error.json")
    h.validate_error(b.PAIRS[case.parent.name], body)


@pytest.mark.parametrize("pair", sorted(b.PAIRS))
def test_exact_bytes(pair: str):
    expected = _load(b.FIXTURES / pair / "exact_bytes.json")
    got = {case.name: h.exact_record(case) for case in b.cases() if case.parent.name == pair}
    assert set(got) == set(expected), "a case was added or removed: add it to exact_bytes.json too"
    for name, record in got.items():
        assert record == expected[name], name


def test_registry():
    for inbound in b.PAIRS.values():
        tr = get_translator(inbound, Api.BEDROCK)
        assert tr is get_translator(inbound.value, "bedrock")
        assert (tr.inbound, tr.upstream) == (inbound, Api.BEDROCK)

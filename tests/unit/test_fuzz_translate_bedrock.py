"""Fuzz the AWS Bedrock (Converse) pairs as tests/unit/test_fuzz_translate_*.py fuzz the others:
client bodies translate to a Converse request botocore's own serializer accepts, or a 400; any
Converse answer or error gives a client-format result or a 502; any bytes, or real-shaped Converse
events framed and cut anywhere, give a client stream that ends properly. Nothing else raises."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from fuzz_helpers import (
    anthropic_bodies,
    dumps,
    fuzz,
    json_values,
    openai_bodies,
    parse_or_error,
    statuses,
    texts,
)
from hypothesis import given, note
from hypothesis import strategies as st
from test_fuzz_translate_response import check_usage, respond
from test_fuzz_translate_stream import run_stream
from test_translate_responses_fuzz import check_responses_stream
from translate_helpers import validate_error

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bedrock_helpers as b

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
CLIENTS = [Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES]


def _translate(inbound: Api, body: dict[str, Any]) -> None:
    note(f"body={body!r}")
    ctx = parse_or_error(inbound, dumps(body))
    if ctx is None:
        return
    try:
        preq = get_translator(inbound, Api.BEDROCK).request(ctx.body, model=MODEL, opts=TranslateOptions())
    except GatewayError as err:
        assert err.status == 400 and err.message.strip(), err
        return
    out = orjson.loads(preq.body)
    assert isinstance(out, dict)
    # Client strings Converse bounds (an empty tool name or id) and a client's own base64 payloads
    # (decoding a 20 MiB image to check it would cost ~70 ms per request) are left to Bedrock's 400.
    b.validate_request(preq.path, out, strict_strings=False)
    if not _blobs_decode(out):  # relayed as the client sent it: botocore cannot serialize it back
        return
    path, body_ = b.botocore_request(preq.path, out, validation=False)
    assert (path, body_) == (preq.path, out)


def _blobs_decode(value: Any) -> bool:
    """Every `source.bytes` blob of a Converse body is valid base64."""
    if isinstance(value, list):
        return all(_blobs_decode(v) for v in value)
    if not isinstance(value, dict):
        return True
    for key, item in value.items():
        if key == "source" and isinstance(item, dict) and isinstance(item.get("bytes"), str):
            try:
                base64.b64decode(item["bytes"], validate=True)
            except ValueError:  # binascii.Error and non-ASCII text are both ValueErrors
                return False
        elif key not in ("input", "json", "additionalModelRequestFields") and not _blobs_decode(item):
            return False
    return True


@fuzz(300)
@given(body=openai_bodies)
def test_openai_request(body: dict[str, Any]) -> None:
    _translate(Api.OPENAI, body)


@fuzz(300)
@given(body=anthropic_bodies)
def test_anthropic_request(body: dict[str, Any]) -> None:
    _translate(Api.ANTHROPIC, body)


# ----------------------------------------------------------------------- Converse-shaped answers


def _maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, valid, json_values)


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> Any:
    return st.fixed_dictionaries(
        {k: _maybe(v) for k, v in required.items()},
        optional={k: _maybe(v) for k, v in (optional or {}).items()},
    )


_counts = st.integers(0, 5000) | st.integers(-(2**63), 2**64 - 1)
_usage = _obj(
    {"inputTokens": _counts, "outputTokens": _counts, "totalTokens": _counts},
    {"cacheReadInputTokens": _counts, "cacheWriteInputTokens": _counts},
)
_stop = st.sampled_from([*sorted(b.shape_enum("StopReason")), "x"])
_block = st.one_of(
    _obj({"text": texts}),
    _obj({"toolUse": _obj({"toolUseId": texts, "name": texts, "input": json_values})}),
    _obj({"reasoningContent": _obj({"reasoningText": _obj({"text": texts}, {"signature": texts})})}),
    _obj({"reasoningContent": _obj({"redactedContent": texts})}),
    _obj({"citationsContent": json_values}),
)
converse_answers = _obj(
    {
        "output": _obj(
            {"message": _obj({"role": st.just("assistant"), "content": st.lists(_block, max_size=3)})}
        ),
        "stopReason": _stop,
        "usage": _usage,
        "metrics": _obj({"latencyMs": _counts}),
    },
    {"additionalModelResponseFields": _obj({}, {"stop_sequence": texts})},
)
_index = st.integers(0, 3) | json_values
_events = st.one_of(
    st.tuples(st.just("messageStart"), _obj({"role": st.just("assistant")})),
    st.tuples(
        st.just("contentBlockStart"),
        _obj(
            {
                "contentBlockIndex": _index,
                "start": _obj({"toolUse": _obj({"toolUseId": texts, "name": texts})}),
            }
        ),
    ),
    st.tuples(
        st.just("contentBlockDelta"),
        _obj(
            {
                "contentBlockIndex": _index,
                "delta": st.one_of(
                    _obj({"text": texts}),
                    _obj({"toolUse": _obj({"input": texts})}),
                    _obj({"reasoningContent": _obj({"text": texts})}),
                    _obj({"reasoningContent": _obj({"signature": texts})}),
                ),
            }
        ),
    ),
    st.tuples(st.just("contentBlockStop"), _obj({"contentBlockIndex": _index})),
    st.tuples(st.just("messageStop"), _obj({"stopReason": _stop})),
    st.tuples(st.just("metadata"), _obj({"usage": _usage, "metrics": _obj({"latencyMs": _counts})})),
    st.tuples(
        st.sampled_from(
            [
                "exception:throttlingException",
                "exception:modelStreamErrorException",
                "exception:validationException",
                "exception:whatever",
            ]
        ),
        _obj({}, {"message": texts}),
    ),
    st.tuples(st.sampled_from(["newEventType", ""]), json_values),
)


@st.composite
def converse_streams(draw: Any) -> list[bytes]:
    """Converse events (real kinds, any field types, any order) framed, maybe cut short, chunked."""
    events = draw(st.lists(_events, max_size=8))
    if draw(st.booleans()):  # a well-formed ending, so the success path is fuzzed too
        events += [("messageStop", {"stopReason": draw(_stop)}), ("metadata", {"usage": draw(_usage)})]
    raw = b"".join(b.frames([list(e) for e in events]))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    if raw and draw(st.integers(0, 9)) == 0:  # a corrupted byte
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1 :]
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    return [raw[x:y] for x, y in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC], ids=lambda a: a.value)
@fuzz(60)
@given(body=st.binary(max_size=100) | json_values.map(dumps))
def test_response_garbage(inbound: Api, body: bytes) -> None:
    respond(inbound, Api.BEDROCK, body)


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC], ids=lambda a: a.value)
@fuzz(200)
@given(body=converse_answers)
def test_response_converse(inbound: Api, body: dict[str, Any]) -> None:
    respond(inbound, Api.BEDROCK, dumps(body))


_aws_errors = st.one_of(
    st.binary(max_size=64),
    json_values.map(dumps),
    _obj({"message": texts}).map(dumps),
    _obj({"Message": texts}, {"__type": texts}).map(dumps),
)


@pytest.mark.parametrize("inbound", CLIENTS, ids=lambda a: a.value)
@fuzz(80)
@given(status=statuses | st.sampled_from([408, 424]), body=_aws_errors)
def test_error(inbound: Api, status: int, body: bytes) -> None:
    out_status, out = get_translator(inbound, Api.BEDROCK).error(status, body)
    assert 400 <= out_status <= 599
    validate_error(inbound, out)


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC], ids=lambda a: a.value)
@fuzz(60)
@given(chunks=st.lists(st.binary(max_size=48), max_size=6), wants_usage=st.booleans())
def test_stream_arbitrary_bytes(inbound: Api, chunks: list[bytes], wants_usage: bool) -> None:
    run_stream(inbound, Api.BEDROCK, chunks, wants_usage)


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC], ids=lambda a: a.value)
@fuzz(150)
@given(chunks=converse_streams(), wants_usage=st.booleans())
def test_stream_converse_events(inbound: Api, chunks: list[bytes], wants_usage: bool) -> None:
    note(f"chunks={chunks!r}")
    run_stream(inbound, Api.BEDROCK, chunks, wants_usage)


@fuzz(100)
@given(chunks=converse_streams())
def test_stream_responses_client(chunks: list[bytes]) -> None:
    st_ = get_translator(Api.RESPONSES, Api.BEDROCK).stream(client_wants_usage=False)
    out = b"".join(st_.feed(c) for c in chunks) + st_.finish()
    assert st_.finish() == b""
    check_usage(st_.usage)
    check_responses_stream(out)


def test_a_repeated_tool_use_id_gives_the_responses_client_distinct_call_ids() -> None:
    """Found by the fuzzer above: two tool calls with one toolUseId made the openai SDK stop the
    stream ("conflicting output identities"). Each call id is given once per response."""
    events = [["messageStart", {"role": "assistant"}]]
    for i in (0, 1):
        events += [
            ["contentBlockStart", {"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}],
            ["contentBlockDelta", {"contentBlockIndex": i, "delta": {"toolUse": {"input": "{}"}}}],
            ["contentBlockStop", {"contentBlockIndex": i}],
        ]
    events += [["messageStop", {"stopReason": "tool_use"}],
               ["metadata", {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {"latencyMs": 1}}]]  # fmt: skip
    st_ = get_translator(Api.RESPONSES, Api.BEDROCK).stream(client_wants_usage=False)
    out = b"".join(st_.feed(c) for c in b.frames(events)) + st_.finish()
    check_responses_stream(out)
    done = [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: ")]
    calls = [e["item"]["call_id"] for e in done if e.get("type") == "response.output_item.done"]
    assert calls == ["t1", "t1_2"]

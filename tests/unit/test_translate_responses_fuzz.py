"""Fuzz the Responses pairs: any provider bytes or answers give a client stream / answer that the
``openai`` (or ``anthropic``) SDK accepts and that always ends properly; any Responses request
body gives either a 400 or a provider request valid for the provider's SDK types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fuzz_helpers import (
    anthropic_messages,
    arguments,
    client_events,
    dumps,
    error_bodies,
    fuzz,
    json_values,
    openai_completions,
    provider_streams,
    statuses,
    texts,
)
from hypothesis import given, note
from hypothesis import strategies as st
from openai import omit
from test_fuzz_translate_response import check_usage, respond
from test_fuzz_translate_stream import run_stream
from translate_helpers import adapter, validate_error, validate_request, validate_stream

from sidegate.errors import Api, GatewayError
from sidegate.translate import get_translator
from sidegate.translate.base import TranslateOptions

OTHERS = [Api.OPENAI, Api.ANTHROPIC]
_ENDS = {"response.completed", "response.incomplete", "response.failed"}


def check_responses_stream(data: bytes) -> None:
    """Valid SSE; every event an SDK event named in both places; sequence numbers 0..n-1; exactly
    one terminal event, last; an ``error`` event only right before ``response.failed``; and the
    SDK's own accumulation accepts the events up to the error it would raise on."""
    from openai.lib.streaming.responses._responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent  # noqa: F401

    events = client_events(data)
    assert events, "a finished stream always says how it ended"
    validate_stream(Api.RESPONSES, data)
    names = [name for name, _ in events]
    assert names[0] == "response.created" and names[-1] in _ENDS, names
    assert not _ENDS & set(names[:-1]), names
    if "error" in names:
        assert names.index("error") == len(names) - 2 and names[-1] == "response.failed", names
    assert [orjson.loads(d)["sequence_number"] for _, d in events] == list(range(len(events)))
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for name, payload in events:
        if name == "error":
            break
        state.handle_event(adapter("responses_event").validate_python(orjson.loads(payload)))


@pytest.mark.parametrize("upstream", OTHERS, ids=lambda a: a.value)
@fuzz(120)
@given(data=st.data())
def test_responses_client_stream(upstream: Api, data: st.DataObject) -> None:
    chunks = data.draw(provider_streams(upstream))
    note(f"chunks={chunks!r}")
    st_ = get_translator(Api.RESPONSES, upstream).stream(client_wants_usage=False)
    out = b"".join(st_.feed(c) for c in chunks) + st_.finish()
    assert st_.finish() == b""
    check_usage(st_.usage)
    check_responses_stream(out)


# A Responses provider's events: the real kinds with fields of any type, and junk.
_item = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "reasoning", "web_search_call", 3])},
    optional={
        "call_id": texts | st.none(),
        "name": texts | st.integers(-5, 99),
        "arguments": arguments | st.none(),
    },
)
_usage = st.fixed_dictionaries(
    {"input_tokens": st.integers(-1, 5000) | texts, "output_tokens": st.integers(0, 5000)},
    optional={
        "input_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(-1, 9000)}),
        "output_tokens_details": st.fixed_dictionaries({"reasoning_tokens": st.integers(0, 99) | st.none()}),
    },
)
_response = st.fixed_dictionaries(
    {"id": texts, "model": texts},
    optional={
        "usage": _usage | st.none() | json_values,
        "incomplete_details": st.fixed_dictionaries(
            {"reason": st.sampled_from(["max_output_tokens", "content_filter", 7])}
        )
        | st.none(),
        "error": st.fixed_dictionaries({"code": texts, "message": texts}) | st.none(),
    },
)
_KINDS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.function_call_arguments.delta",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "response.unknown_kind",
]
_responses_events = st.fixed_dictionaries(
    {"type": st.sampled_from(_KINDS)},
    optional={
        "response": _response | json_values,
        "item": _item,
        "output_index": st.integers(0, 3) | texts,
        "delta": texts | st.integers(-5, 99),
        "message": texts,
        "code": st.sampled_from(["rate_limit_exceeded", "server_error", "x"]),
        "error": st.fixed_dictionaries({"message": texts, "type": texts}),
    },
)


@st.composite
def responses_streams(draw: Any) -> list[bytes]:
    events = draw(st.lists(_responses_events, max_size=8))
    blocks = [
        (b"event: " + ev["type"].encode() + b"\n" if draw(st.booleans()) else b"") + b"data: " + dumps(ev)
        for ev in events
    ]
    for _ in range(draw(st.integers(0, 2))):
        blocks.insert(
            draw(st.integers(0, len(blocks))), draw(st.sampled_from([b": keep-alive", b"data: nope"]))
        )
    raw = b"".join(b + b"\n\n" for b in blocks)
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


@pytest.mark.parametrize("inbound", OTHERS, ids=lambda a: a.value)
@fuzz(120)
@given(chunks=responses_streams(), wants_usage=st.booleans())
def test_responses_provider_stream(inbound: Api, chunks: list[bytes], wants_usage: bool) -> None:
    note(f"chunks={chunks!r}")
    run_stream(inbound, Api.RESPONSES, chunks, wants_usage)


@fuzz(80)
@given(chunks=responses_streams())
def test_responses_passthrough_stream(chunks: list[bytes]) -> None:
    st_ = get_translator(Api.RESPONSES, Api.RESPONSES).stream(client_wants_usage=False)
    out = b"".join(st_.feed(c) for c in chunks) + st_.finish()
    check_usage(st_.usage)
    events = client_events(out)
    assert events, "a finished stream always says how it ended"
    kinds = [name or orjson.loads(data).get("type") for name, data in events]  # forwarded as sent
    assert kinds[-1] in ("error", *_ENDS), kinds
    assert not {"error", *_ENDS} & set(kinds[:-1]), kinds


_answers = st.fixed_dictionaries(
    {"id": texts, "model": texts, "output": st.lists(_item, max_size=4) | json_values},
    optional={"usage": _usage | json_values, "incomplete_details": json_values, "status": texts},
)


@fuzz(150)
@given(msg=anthropic_messages, completion=openai_completions, answer=_answers)
def test_responses_answers(msg: dict[str, Any], completion: dict[str, Any], answer: dict[str, Any]) -> None:
    assert respond(Api.RESPONSES, Api.ANTHROPIC, dumps(msg)) is not None
    assert respond(Api.RESPONSES, Api.OPENAI, dumps(completion)) is not None
    for inbound in (Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES):
        assert respond(inbound, Api.RESPONSES, dumps(answer)) is not None


@pytest.mark.parametrize(
    ("inbound", "upstream"), [(Api.RESPONSES, a) for a in OTHERS] + [(a, Api.RESPONSES) for a in OTHERS]
)
@fuzz(60)
@given(status=statuses, body=error_bodies)
def test_errors(inbound: Api, upstream: Api, status: int, body: bytes) -> None:
    out_status, out = get_translator(inbound, upstream).error(status, body)
    assert (400 <= out_status <= 599 and out_status != 529) or inbound is Api.ANTHROPIC
    validate_error(inbound, out)


_parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": texts | st.integers(-5, 99)}),
    st.fixed_dictionaries(
        {
            "type": st.just("input_image"),
            "detail": st.just("auto"),
            "image_url": st.sampled_from(
                ["https://x/a.png", "data:image/png;base64,AA==", "ftp://x", "data:x"]
            ),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["output_text", "refusal", "input_audio"]), "text": texts}
    ),
)
_input_items = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool"])},
        optional={
            "content": texts | st.lists(_parts, max_size=3) | st.integers(-5, 99),
            "type": st.just("message"),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call"), "call_id": texts, "name": texts, "arguments": arguments}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("function_call_output"),
            "call_id": texts,
            "output": texts | st.lists(_parts, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("reasoning"), "id": texts, "summary": st.just([])},
        optional={"encrypted_content": texts},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["item_reference", "web_search_call", 5])}),
)
_tool = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("function"), "name": texts, "strict": st.booleans() | st.none()},
        optional={"parameters": st.just({"type": "object", "properties": {}}) | st.none() | texts},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["web_search", "file_search", "mcp"])}),
)
responses_bodies = st.fixed_dictionaries(
    {"model": texts, "input": texts | st.lists(_input_items, max_size=5)},
    optional={
        "instructions": texts | st.integers(-5, 99),
        "tools": st.lists(_tool, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "name": "f"}, "x"]),
        "parallel_tool_calls": st.booleans(),
        "max_output_tokens": st.integers(-1, 9000) | texts,
        "temperature": st.floats(0, 2, allow_nan=False) | texts,
        "reasoning": st.fixed_dictionaries(
            {"effort": st.sampled_from(["low", "medium", "high", "none", "max", 3])}
        ),
        "text": st.fixed_dictionaries(
            {
                "format": st.sampled_from(
                    [
                        {"type": "text"},
                        {"type": "json_object"},
                        {"type": "json_schema", "name": "o", "schema": {"type": "object"}},
                    ]
                )
            }
        ),
        "stream": st.booleans(),
        "store": st.booleans(),
        "metadata": st.just({"a": "b"}),
        "previous_response_id": st.none() | texts,
        "frobnicate": st.integers(-5, 99),
    },
)


@pytest.mark.parametrize("upstream", OTHERS, ids=lambda a: a.value)
@fuzz(200)
@given(body=responses_bodies)
def test_responses_requests(upstream: Api, body: dict[str, Any]) -> None:
    try:
        req = get_translator(Api.RESPONSES, upstream).request(body, model="up", opts=TranslateOptions())
    except GatewayError as err:
        assert err.status == 400 and err.param and err.message.strip(), err
        return
    validate_request(upstream, orjson.loads(req.body))

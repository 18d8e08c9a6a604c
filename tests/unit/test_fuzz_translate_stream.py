"""Fuzz every stream translator: any provider bytes, cut anywhere, give a client stream that is
valid SSE in the client's format and always ends properly; feed/finish never raise."""

from __future__ import annotations

import orjson
import pytest
from fuzz_helpers import client_events, fuzz, provider_streams
from hypothesis import given, note
from hypothesis import strategies as st
from test_fuzz_translate_response import check_usage
from translate_helpers import validate_stream

from sidegate.errors import Api
from sidegate.translate import get_translator

PAIRS = [
    (Api.OPENAI, Api.ANTHROPIC),
    (Api.ANTHROPIC, Api.OPENAI),
    (Api.OPENAI, Api.OPENAI),
    (Api.ANTHROPIC, Api.ANTHROPIC),
]
IDS = [f"{a.value}-to-{b.value}" for a, b in PAIRS]


def _terminal(api: Api, name: str | None, data: bytes) -> bool:
    if api is Api.OPENAI:
        return data == b"[DONE]" or data.startswith(b'{"error"')
    if name is None:
        obj = orjson.loads(data) if data.startswith(b"{") else None
        name = obj.get("type") if isinstance(obj, dict) else None
    return name in ("message_stop", "error")


def run_stream(inbound: Api, upstream: Api, chunks: list[bytes], wants_usage: bool) -> bytes:
    """Feed ``chunks``, finish, and check the client stream; returns it."""
    st_ = get_translator(inbound, upstream).stream(client_wants_usage=wants_usage)
    out = b"".join(st_.feed(c) for c in chunks)
    tail = st_.finish()
    assert st_.finish() == b""  # finish is idempotent
    data = out + tail
    check_usage(st_.usage)
    events = client_events(data)
    assert events, "a finished stream always says how it ended"
    flags = [_terminal(inbound, name, payload) for name, payload in events]
    assert flags[-1], events[-1]  # ends with [DONE] / message_stop, or an error event
    assert not any(flags[:-1]), events  # and nothing follows the terminal event
    if inbound is not upstream:
        validate_stream(inbound, data)  # translated streams: every event is a valid SDK event
    return data


@pytest.mark.parametrize(("inbound", "upstream"), PAIRS, ids=IDS)
@fuzz(60)
@given(chunks=st.lists(st.binary(max_size=48), max_size=6), wants_usage=st.booleans())
def test_stream_arbitrary_bytes(inbound: Api, upstream: Api, chunks: list[bytes], wants_usage: bool) -> None:
    note(f"chunks={chunks!r}")
    data = run_stream(inbound, upstream, chunks, wants_usage)
    if inbound is not upstream:  # passthrough forwards the provider's own event payloads
        for _, payload in client_events(data):
            assert payload == b"[DONE]" or isinstance(orjson.loads(payload), dict)


@pytest.mark.parametrize(("inbound", "upstream"), PAIRS, ids=IDS)
@fuzz(120)
@given(data=st.data(), wants_usage=st.booleans())
def test_stream_provider_events(inbound: Api, upstream: Api, data: st.DataObject, wants_usage: bool) -> None:
    chunks = data.draw(provider_streams(upstream))
    note(f"chunks={chunks!r}")
    run_stream(inbound, upstream, chunks, wants_usage)

"""Content for opted-in tenants' spans (sidegate/features/tracing/content.py): every client API's
request and answer (JSON and stream), as the golden translation fixtures have them, read into the
GenAI semconv's message shapes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sidegate.errors import Api
from sidegate.features.tracing.content import MAX_PART_CHARS, ContentHook, input_messages, read_answer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "translate"
CLIENTS = [  # (client API, a pair whose client side it is, its stream case)
    (Api.OPENAI, "openai_anthropic", "stream_text_usage"),
    (Api.ANTHROPIC, "anthropic_openai", "stream_text"),
    (Api.RESPONSES, "responses_anthropic", "stream_text_usage"),
    (Api.GEMINI, "gemini_openai", "stream_text"),
]


@pytest.mark.parametrize(("api", "pair", "stream"), CLIENTS, ids=[c[0].value for c in CLIENTS])
def test_every_client_apis_request_and_answer_read_as_semconv_messages(
    api: Api, pair: str, stream: str
) -> None:
    body = orjson.loads((FIXTURES / pair / "req_text" / "request.json").read_bytes())
    attrs = input_messages(api, body)
    messages = orjson.loads(attrs["gen_ai.input.messages"])
    assert messages and all(m["role"] in ("user", "assistant", "tool") and m["parts"] for m in messages)
    assert any(p["type"] == "text" and p["content"] for m in messages for p in m["parts"])
    for raw, streamed in (((FIXTURES / pair / "resp_text" / "expected_response.json").read_bytes(), False),
                          ((FIXTURES / pair / stream / "expected_stream.sse").read_bytes(), True)):  # fmt: skip
        answer = read_answer(api, raw, streamed)
        assert answer is not None, (api, streamed)
        (message,) = answer.messages
        assert (
            message["role"] == "assistant"
            and message["parts"][0]["type"] == "text"
            and message["parts"][0]["content"]
        )
        assert answer.finish == message["finish_reason"] == "stop"


def test_system_instructions_apart_long_text_cut_and_unreadable_bodies_skipped() -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": "x" * (MAX_PART_CHARS + 10)}]}  # fmt: skip
    attrs = input_messages(Api.OPENAI, body)
    assert orjson.loads(attrs["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    (user,) = orjson.loads(attrs["gen_ai.input.messages"])
    assert len(user["parts"][0]["content"]) == MAX_PART_CHARS + 1  # cut, with a marker
    assert input_messages(Api.OPENAI, {"messages": "not a list"}) == {}
    assert read_answer(Api.OPENAI, b"not json", False) is None


def test_a_hook_keeps_the_answer_bounded_and_passes_it_on_unchanged() -> None:
    hook = ContentHook(Api.OPENAI)
    assert hook.stream(b"data: x\n\n", False) == b"data: x\n\n"
    hook.answer += b"x" * (1 << 20)
    hook.stream(b"more", True)
    assert not hook.whole and not hook.answer  # too long: no output recorded, nothing held
    attrs, answer = hook.attributes(streamed=True, ok=True)
    assert "gen_ai.output.messages" not in attrs and answer is None

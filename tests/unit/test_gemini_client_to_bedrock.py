"""A Gemini API client on a model served by AWS Bedrock: every client API reaches every provider
API (the issue's "fallback across any pair"), so a google-genai app whose chain holds a Bedrock
model gets its answer (and its stream) in Gemini's shapes, not a gateway error."""

from __future__ import annotations

import orjson
from google.genai import types

from sidegate.errors import CLIENT_APIS, Api
from sidegate.translate import TranslateOptions, get_translator
from sidegate.translate.codecs.bedrock.eventstream import encode_event

HELLO = {
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
    "generationConfig": {"maxOutputTokens": 50},
}


def test_every_client_api_reaches_every_provider_api() -> None:
    for client in CLIENT_APIS:
        for provider in Api:
            get_translator(client, provider)  # raises KeyError for a missing pair


def test_request_and_answer() -> None:
    tx = get_translator(Api.GEMINI, Api.BEDROCK)
    preq = tx.request(
        HELLO, model="anthropic.claude-3-haiku-20240307-v1:0", opts=TranslateOptions(stream=False)
    )
    assert preq.path == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    body = orjson.loads(preq.body)
    assert body["messages"] == [{"role": "user", "content": [{"text": "Hi"}]}]
    assert body["system"] == [{"text": "Be brief."}] and body["inferenceConfig"]["maxTokens"] == 50
    answer = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 7, "outputTokens": 2, "totalTokens": 9},
    }
    out, usage = tx.response(orjson.dumps(answer), model="anthropic.claude-3-haiku-20240307-v1:0")
    doc = types.GenerateContentResponse.model_validate(orjson.loads(out))
    assert doc.text == "Hello" and doc.candidates[0].finish_reason == types.FinishReason.STOP
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (7, 2)


def test_stream_is_gemini_sse_with_usage() -> None:
    tx = get_translator(Api.GEMINI, Api.BEDROCK)
    preq = tx.request(HELLO, model="m", opts=TranslateOptions(stream=True))
    assert preq.path == "/model/m/converse-stream"
    frames = b"".join(
        encode_event(name, orjson.dumps(obj))
        for name, obj in (
            ("messageStart", {"role": "assistant"}),
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
            ("contentBlockStop", {"contentBlockIndex": 0}),
            ("messageStop", {"stopReason": "end_turn"}),
            ("metadata", {"usage": {"inputTokens": 7, "outputTokens": 2, "totalTokens": 9}, "metrics": {}}),
        )
    )
    st = tx.stream(client_wants_usage=True, model="m")
    out = b"".join(st.feed(frames[i : i + 9]) for i in range(0, len(frames), 9)) + st.finish()
    events = [orjson.loads(block[6:]) for block in out.split(b"\n\n") if block]
    for ev in events:
        types.GenerateContentResponse.model_validate(ev)
    assert (
        "".join(p.get("text", "") for ev in events for p in ev["candidates"][0]["content"]["parts"])
        == "Hello"
    )
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["promptTokenCount"] == 7 and st.done
    assert st.usage is not None and st.usage.output_tokens == 2

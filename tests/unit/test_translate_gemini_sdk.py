"""The google-genai SDK reads what the Gemini client codec writes: answers, streams (text, a tool
call, usage) and a stream cut mid-way (surfaced as the SDK's APIError), through an in-process
httpx transport that plays an Anthropic provider behind the translator."""

from __future__ import annotations

import json

import httpx
import pytest
from google import genai
from google.genai import errors, types

from sidegate.errors import Api
from sidegate.translate import TranslateOptions, get_translator

STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m1","type":"message","role":"assistant",'
    b'"model":"claude","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
    b'"content_block":{"type":"tool_use","id":"t1","name":"f","input":{}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
    b'"delta":{"type":"input_json_delta","partial_json":"{\\"a\\":1}"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
ANSWER = {
    "id": "m1",
    "type": "message",
    "role": "assistant",
    "model": "claude",
    "content": [{"type": "text", "text": "Hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 2},
}


def _client(cut: bool = False) -> genai.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        tr = get_translator(Api.GEMINI, Api.ANTHROPIC)
        stream = "streamGenerateContent" in request.url.path
        tr.request(json.loads(request.content), model="claude", opts=TranslateOptions(stream=stream))
        if not stream:
            body, _ = tr.response(json.dumps(ANSWER).encode())
            return httpx.Response(200, content=body, headers={"content-type": "application/json"})
        st = tr.stream(client_wants_usage=False)
        out = st.feed(STREAM[:500] if cut else STREAM) + st.finish()
        return httpx.Response(200, content=out, headers={"content-type": "text/event-stream"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return genai.Client(
        api_key="k", http_options=types.HttpOptions(base_url="http://gw.test", httpx_client=http)
    )


def test_answer():
    r = _client().models.generate_content(model="m", contents="hi")
    assert r.text == "Hello" and r.candidates[0].finish_reason == types.FinishReason.STOP
    assert (r.usage_metadata.prompt_token_count, r.usage_metadata.total_token_count) == (3, 5)
    assert r.response_id == "m1" and r.model_version == "claude"


def test_stream_text_and_tool_call():
    chunks = list(_client().models.generate_content_stream(model="m", contents="hi"))
    assert chunks[0].text == "Hi"
    call = chunks[-1].function_calls[0]
    assert (call.id, call.name, call.args) == ("t1", "f", {"a": 1})
    assert chunks[-1].usage_metadata.candidates_token_count == 9


def test_stream_cut_is_an_api_error():
    got = []
    with pytest.raises(errors.ServerError) as err:
        for chunk in _client(cut=True).models.generate_content_stream(model="m", contents="hi"):
            got.append(chunk.text)
    assert got == ["Hi"] and err.value.code == 500
    assert "ended before the response was complete" in err.value.message


def test_chat_history_goes_back_through_the_decoder():
    """A google-genai chat re-sends its history (our streamed chunks, merged as the SDK merges them,
    and a function response): the decoder takes it."""
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tr = get_translator(Api.GEMINI, Api.ANTHROPIC)
        preq = tr.request(json.loads(request.content), model="claude", opts=TranslateOptions(stream=True))
        seen.append(json.loads(preq.body))
        st = tr.stream(client_wants_usage=False)
        return httpx.Response(
            200, content=st.feed(STREAM) + st.finish(), headers={"content-type": "text/event-stream"}
        )

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = genai.Client(
        api_key="k", http_options=types.HttpOptions(base_url="http://gw.test", httpx_client=http)
    )
    chat = client.chats.create(model="m")
    list(chat.send_message_stream("hi"))
    list(chat.send_message_stream(types.Part.from_function_response(name="f", response={"result": "ok"})))
    messages = seen[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}} in messages[1]["content"]
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]

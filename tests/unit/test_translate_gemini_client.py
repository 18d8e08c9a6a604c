"""The Gemini codec's client side: a Gemini API client -> OpenAI, Anthropic and Responses providers
(requests decoded, answers and streams encoded as google-genai reads them), and the Gemini
passthrough."""

from __future__ import annotations

import base64

import orjson
import pytest
from google.genai import types

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator
from sidegate.translate.gemini_gemini import GeminiGemini


def _req(upstream: Api, body: dict, stream: bool = False) -> tuple[str, dict]:
    pr = get_translator(Api.GEMINI, upstream).request(body, model="up", opts=TranslateOptions(stream=stream))
    return pr.path, orjson.loads(pr.body)


BASIC = {
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "Weather in Oslo?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"result": "3C"}}}]},
    ],
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "w",
                    "description": "Weather",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING", "nullable": True}},
                        "required": ["city"],
                        "propertyOrdering": ["city"],
                    },
                }
            ]
        }
    ],
    "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5, "topK": 40, "stopSequences": ["X"]},
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
}


def test_to_openai():
    path, body = _req(Api.OPENAI, BASIC, stream=True)
    assert path == "/v1/chat/completions"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},  # one text part: a plain string
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "3C"},
    ]
    assert body["tools"][0]["function"]["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": ["string", "null"]}},
        "required": ["city"],
    }
    assert (body["max_completion_tokens"], body["temperature"], body["top_k"], body["stop"]) == (
        100,
        0.5,
        40,
        ["X"],
    )
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_to_anthropic():
    path, body = _req(Api.ANTHROPIC, BASIC)
    assert path == "/v1/messages" and "stream" not in body
    assert body["system"] == "Be brief."
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_0", "name": "w", "input": {"city": "Oslo"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_0", "content": "3C"}
    ]


def test_ids_pair_by_id_then_by_name_and_order():
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "f", "args": {"n": 1}}},
                    {"functionCall": {"name": "f", "args": {"n": 2}}},
                    {"functionCall": {"id": "x9", "name": "g", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"id": "x9", "name": "g", "response": {"output": "G"}}},
                    {"functionResponse": {"name": "f", "response": {"v": 1}}},
                    {"functionResponse": {"name": "f", "response": {"error": "boom"}}},
                ],
            },
        ]
    }
    _, out = _req(Api.ANTHROPIC, body)
    assert [b["id"] for b in out["messages"][1]["content"]] == ["call_0", "call_1", "x9"]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "x9", "content": "G"},
        {"type": "tool_result", "tool_use_id": "call_0", "content": '{"v":1}'},
        {"type": "tool_result", "tool_use_id": "call_1", "content": "boom", "is_error": True},
    ]
    with pytest.raises(GatewayError) as err:
        _req(Api.ANTHROPIC, {"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]})
    assert err.value.status == 400


def test_media_json_schema_and_thinking():
    body = {
        "contents": [
            {
                "parts": [
                    {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/c.jpg"}},
                    {"inlineData": {"mimeType": "application/pdf", "data": "JV"}},
                    {"text": "describe"},
                ]
            }
        ],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}},
            "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True},
        },
    }
    _, out = _req(Api.ANTHROPIC, body)
    assert out["messages"][0]["content"][:3] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/c.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JV"}},
    ]
    assert out["output_config"] == {
        "format": {
            "type": "json_schema",
            "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
        }
    }
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    _, out = _req(Api.OPENAI, body)
    assert out["response_format"]["json_schema"]["schema"]["properties"] == {"a": {"type": "integer"}}
    assert out["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"cachedContent": "cachedContents/1"}, "cachedContent"),
        ({"tools": [{"googleSearch": {}}]}, "tools"),
        ({"generationConfig": {"candidateCount": 2}}, "generationConfig.candidateCount"),
        ({"generationConfig": {"seed": 3}}, "generationConfig.seed"),
        ({"generationConfig": {"responseMimeType": "application/json"}}, "generationConfig"),
        ({"generationConfig": {"maxOutputTokens": 0}}, "generationConfig"),
        ({"contents": [{"parts": [{"fileData": {"fileUri": "gs://b/o"}}]}]}, "contents"),
        ({"contents": [{"parts": [{"executableCode": {"code": "1"}}]}]}, "contents"),
        ({"contents": []}, "contents"),
        ({"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}, "toolConfig"),
        ({"unknownThing": 1}, "unknownThing"),
    ],
)
def test_refusals(patch, param):
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], **patch}
    with pytest.raises(GatewayError) as err:
        _req(Api.OPENAI, body)
    assert (err.value.status, err.value.param) == (400, param)


def test_noop_values_and_dropped_settings_accepted():
    body = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generationConfig": {"candidateCount": 1, "responseModalities": ["TEXT"], "presencePenalty": 0},
        "safetySettings": [],
        "labels": {"team": "a"},
    }
    _, out = _req(Api.OPENAI, body)
    assert set(out) == {"model", "messages"}


def test_allowed_function_names():
    tools = [{"functionDeclarations": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}]
    body = {"contents": [{"parts": [{"text": "x"}]}], "tools": tools}
    _, out = _req(
        Api.OPENAI,
        {**body, "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}}},
    )
    assert out["tool_choice"] == {"type": "function", "function": {"name": "b"}}
    _, out = _req(
        Api.OPENAI,
        {
            **body,
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a", "c"]}},
        },
    )
    assert out["tool_choice"] == "required" and [t["function"]["name"] for t in out["tools"]] == ["a", "c"]
    _, out = _req(Api.ANTHROPIC, {**body, "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}})
    assert out["tool_choice"] == {"type": "none"}


# ----------------------------------------------------------------------------------- responses


def test_openai_answer_for_gemini_client():
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 7,
            "total_tokens": 12,
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    out, usage = get_translator(Api.GEMINI, Api.OPENAI).response(orjson.dumps(answer))
    obj = orjson.loads(out)
    assert obj == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "Hi"}, {"functionCall": {"id": "c1", "name": "f", "args": {"a": 1}}}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12},
        "modelVersion": "gpt-x",
        "responseId": "chatcmpl-1",
    }
    sdk = types.GenerateContentResponse.model_validate(obj)
    assert sdk.text == "Hi" and sdk.function_calls[0].args == {"a": 1}
    assert usage.output_tokens == 7


def test_refusal_and_length_finish_for_gemini_client():
    msg = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "content": [],
        "stop_reason": "refusal",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 0},
    }
    out, _ = get_translator(Api.GEMINI, Api.ANTHROPIC).response(orjson.dumps(msg))
    assert orjson.loads(out)["candidates"][0]["finishReason"] == "SAFETY"
    msg.update(stop_reason="max_tokens", content=[{"type": "thinking", "thinking": "t", "signature": "s"}])
    out, _ = get_translator(Api.GEMINI, Api.ANTHROPIC).response(orjson.dumps(msg))
    cand = orjson.loads(out)["candidates"][0]
    assert cand["finishReason"] == "MAX_TOKENS"
    assert cand["content"]["parts"] == [{"text": "t", "thought": True}]  # no foreign signature


def _events(data: bytes) -> list[dict]:
    out = []
    for block in data.split(b"\n\n"):
        if block:
            assert block.startswith(b"data: "), block
            out.append(orjson.loads(block[6:]))
    return out


ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m1","type":"message","role":"assistant","model":"c","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t1","name":"f","input":{}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"a\\""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":":1}"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def test_stream_from_anthropic_for_gemini_client():
    st = get_translator(Api.GEMINI, Api.ANTHROPIC).stream(client_wants_usage=False)
    out = (
        b"".join(st.feed(ANTHROPIC_STREAM[i : i + 7]) for i in range(0, len(ANTHROPIC_STREAM), 7))
        + st.finish()
    )
    events = _events(out)
    assert len(events) == 2
    for ev in events:
        types.GenerateContentResponse.model_validate(ev)
    assert events[0]["candidates"][0]["content"]["parts"] == [{"text": "Hi"}]
    assert events[0]["responseId"] == "m1" and events[0]["modelVersion"] == "c"
    final = events[1]
    assert final["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"id": "t1", "name": "f", "args": {"a": 1}}}
    ]
    assert final["candidates"][0]["finishReason"] == "STOP"
    assert final["usageMetadata"] == {"promptTokenCount": 3, "candidatesTokenCount": 9, "totalTokenCount": 12}
    assert st.done and st.usage.output_tokens == 9


def test_stream_cut_for_gemini_client_is_a_google_error():
    st = get_translator(Api.GEMINI, Api.ANTHROPIC).stream(client_wants_usage=False)
    out = st.feed(ANTHROPIC_STREAM[:600]) + st.finish()
    last = _events(out)[-1]
    assert last["error"]["code"] == 500 and last["error"]["status"] == "INTERNAL"
    assert list(last) == ["error"]  # google-genai raises on a chunk starting {"error":


def test_gemini_client_errors():
    status, body = get_translator(Api.GEMINI, Api.ANTHROPIC).error(
        529, b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'
    )
    assert (status, orjson.loads(body)) == (
        503,
        {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}},
    )
    status, body = get_translator(Api.GEMINI, Api.OPENAI).error(
        429, b'{"error":{"message":"slow","type":"rate_limit_error"}}'
    )
    assert orjson.loads(body)["error"]["status"] == "RESOURCE_EXHAUSTED"


# ------------------------------------------------------------------------------------ passthrough


def test_passthrough_request_and_response():
    tr = get_translator(Api.GEMINI, Api.GEMINI)
    assert isinstance(tr, GeminiGemini)
    pr = tr.request(BASIC, model="gemini-2.5-pro", opts=TranslateOptions(stream=False))
    assert pr.path == "/v1beta/models/gemini-2.5-pro:generateContent" and orjson.loads(pr.body) == BASIC
    pr = tr.request(BASIC, model="gemini-2.5-pro", opts=TranslateOptions(stream=True))
    assert pr.path == "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    raw = b'{"candidates":[],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3,"thoughtsTokenCount":1}}'
    body, usage = tr.response(raw)
    assert body is raw and (usage.input_tokens, usage.output_tokens) == (2, 4)
    with pytest.raises(GatewayError):
        tr.response(b"nope")


def test_passthrough_stream():
    tr = get_translator(Api.GEMINI, Api.GEMINI)
    ev1 = b'data: {"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":{"promptTokenCount":2}}\r\n\r\n'
    ev2 = b'data: {"candidates":[{"content":{"parts":[{"text":"b"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":5}}\n\n'
    st = tr.stream(client_wants_usage=False)
    out = st.feed(ev1 + b"data: \n\n") + st.feed(ev2)
    assert st.done  # finish reason and usage: the last event
    assert st.feed(ev1) == b"" and st.finish() == b""
    assert out == ev1.replace(b"\r\n", b"\n") + ev2
    assert (st.usage.input_tokens, st.usage.output_tokens) == (2, 5)
    st = tr.stream(client_wants_usage=False)
    out = st.feed(ev1) + st.finish()
    assert b'"status":"INTERNAL"' in out and st.finish() == b""
    st = tr.stream(client_wants_usage=False)
    out = st.feed(b"data: {broken\n\n" + ev2)
    assert b'"error"' in out and b'"b"' not in out and st.done


def test_google_genai_snake_case_fields():
    """google-genai sends some fields in snake_case (the API reads both spellings): the body below
    is what it sent for a real call (captured from its HTTP request)."""
    body = {
        "contents": [
            {
                "parts": [
                    {"text": "Describe"},
                    {"inlineData": {"data": "iVBORw==", "mime_type": "image/png"}},
                    {"fileData": {"file_uri": "https://x.test/a.jpg", "mime_type": "image/jpeg"}},
                ],
                "role": "user",
            },
            {
                "parts": [{"function_call": {"args": {"city": "Oslo"}, "name": "get_weather"}}],
                "role": "model",
            },
            {
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 3}}}],
                "role": "user",
            },
        ],
        "system_instruction": {"parts": [{"text": "Be brief"}], "role": "user"},
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "get_weather",
                        "parameters_json_schema": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                        "response_json_schema": {"type": "string"},
                    },
                    {
                        "name": "f2",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {
                                "x_y": {"type": "ARRAY", "max_items": 2, "items": {"type": "STRING"}}
                            },
                        },
                    },
                ]
            }
        ],
        "tool_config": {
            "function_calling_config": {"allowed_function_names": ["get_weather"], "mode": "ANY"}
        },
        "generationConfig": {
            "maxOutputTokens": 50,
            "stop_sequences": ["X"],
            "response_mime_type": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
            "thinkingConfig": {"include_thoughts": True, "thinking_budget": 1024},
        },
    }
    _, out = _req(Api.ANTHROPIC, body)
    assert out["system"] == "Be brief"
    assert out["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
    ]
    assert out["messages"][1]["content"][0]["input"] == {"city": "Oslo"}
    assert out["messages"][2]["content"][0]["content"] == '{"temp_c":3}'  # a client's data keeps its keys
    assert out["tools"][1]["input_schema"] == {
        "type": "object",
        "properties": {"x_y": {"type": "array", "maxItems": 2, "items": {"type": "string"}}},
    }
    assert out["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert out["stop_sequences"] == ["X"] and out["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert out["output_config"]["format"]["schema"] == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
    }


def test_url_safe_base64_images_reach_other_apis_in_the_standard_alphabet():
    """google-genai sends a Blob's bytes in the URL-safe alphabet (Google takes both); OpenAI data
    URLs and Anthropic's base64 sources take the standard one only."""
    raw = bytes(range(250, 256)) * 4  # encodes with "+" and "/" in the standard alphabet
    body = {"contents": [{"role": "user", "parts": [
        {"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": base64.urlsafe_b64encode(raw).decode()}}]}]}  # fmt: skip
    standard = base64.b64encode(raw).decode()
    assert "-" in base64.urlsafe_b64encode(raw).decode() or "_" in base64.urlsafe_b64encode(raw).decode()
    _, sent = _req(Api.OPENAI, body)
    assert sent["messages"][0]["content"][1]["image_url"]["url"] == f"data:image/png;base64,{standard}"
    _, sent = _req(Api.ANTHROPIC, body)
    assert sent["messages"][0]["content"][1]["source"]["data"] == standard

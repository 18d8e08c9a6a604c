"""The Gemini codec's provider side: OpenAI, Anthropic and Responses clients -> a Gemini provider
(requests encoded, answers and SSE streams decoded, Google's errors read)."""

from __future__ import annotations

import orjson
import pytest

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator
from sidegate.translate.common import parse_provider_error, passthrough_error

OPTS = TranslateOptions()


def _req(inbound: Api, body: dict, **opts) -> tuple[str, dict]:
    pr = get_translator(inbound, Api.GEMINI).request(
        body, model="gemini-2.5-flash", opts=TranslateOptions(**opts)
    )
    assert pr.headers == {}
    return pr.path, orjson.loads(pr.body)


def test_openai_text_system_and_params():
    path, body = _req(
        Api.OPENAI,
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": "Hi"},
            ],
            "max_completion_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "user": "u1",
        },
    )
    assert path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert "model" not in body
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "No emoji."}]},
        "generationConfig": {
            "maxOutputTokens": 64,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
    }


def test_stream_path():
    path, _ = _req(Api.OPENAI, {"messages": [{"role": "user", "content": "x"}], "stream": True})
    assert path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def test_openai_tools_round_trip_pairs_by_name():
    _, body = _req(
        Api.OPENAI,
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "Looking.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Oslo"}'},
                        },
                        {"id": "c2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 3}'},
                {"role": "tool", "tool_call_id": "c2", "content": "noon"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "w",
                        "description": "Weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "additionalProperties": False,
                        },
                    },
                },
                {
                    "type": "function",
                    "function": {"name": "t", "parameters": {"type": "object", "properties": {}}},
                },
            ],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
        },
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Looking."},
                {
                    "functionCall": {"name": "w", "args": {"city": "Oslo"}},
                    "thoughtSignature": "skip_thought_signature_validator",
                },
                {
                    "functionCall": {"name": "t", "args": {}},
                    "thoughtSignature": "skip_thought_signature_validator",
                },
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "w", "response": {"temp": 3}}},
                {"functionResponse": {"name": "t", "response": {"result": "noon"}}},
            ],
        },
    ]
    decls = body["tools"][0]["functionDeclarations"]
    assert decls[0] == {
        "name": "w",
        "description": "Weather",
        "parametersJsonSchema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "additionalProperties": False,
        },
    }
    assert decls[1] == {"name": "t"}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["w"]}}


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")])
def test_tool_choice_modes(choice, mode):
    _, body = _req(
        Api.OPENAI,
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": choice,
        },
    )
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_tool_result_without_call_is_refused():
    with pytest.raises(GatewayError) as err:
        _req(
            Api.OPENAI,
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "zz", "content": "1"},
                ]
            },
        )
    assert err.value.status == 400 and "zz" in err.value.message


def test_images_and_documents():
    _, body = _req(
        Api.OPENAI,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a/cat.JPG?s=1"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/img"}},
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                    ],
                }
            ]
        },
    )
    assert body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"fileData": {"fileUri": "https://x.test/a/cat.JPG?s=1", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://x.test/img"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
    ]


def test_anthropic_blocks_thinking_and_errors():
    _, body = _req(
        Api.ANTHROPIC,
        {
            "model": "m",
            "max_tokens": 2048,
            "system": [{"type": "text", "text": "S"}],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/gif", "data": "R0"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "gs://b/o.png"}},
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": "JV"},
                        },
                        {"type": "text", "text": "what?"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "bad", "is_error": True}
                    ],
                },
            ],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        },
    )
    assert body["systemInstruction"] == {"parts": [{"text": "S"}]}
    assert body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/gif", "data": "R0"}},
        {"fileData": {"fileUri": "gs://b/o.png", "mimeType": "image/png"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JV"}},
        {"text": "what?"},
    ]
    assert body["contents"][1]["parts"] == [
        {
            "functionCall": {"name": "f", "args": {"a": 1}},
            "thoughtSignature": "skip_thought_signature_validator",
        }
    ]
    assert body["contents"][2]["parts"] == [{"functionResponse": {"name": "f", "response": {"error": "bad"}}}]
    assert body["generationConfig"] == {
        "maxOutputTokens": 2048,
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
    }


def test_reasoning_effort_budget():
    _, body = _req(Api.OPENAI, {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"})
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2048, "includeThoughts": True}
    with pytest.raises(GatewayError):
        _req(
            Api.OPENAI,
            {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"},
            reasoning_budgets={},
        )


def test_openai_refused_params_keep_their_400():
    with pytest.raises(GatewayError) as err:
        _req(Api.OPENAI, {"messages": [{"role": "user", "content": "x"}], "logprobs": True})
    assert err.value.param == "logprobs"


def test_responses_client_to_gemini():
    _, body = _req(
        Api.RESPONSES, {"model": "m", "input": "hello", "instructions": "sys", "max_output_tokens": 9}
    )
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hello"}]}],
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "generationConfig": {"maxOutputTokens": 9},
    }


# ----------------------------------------------------------------------------------- responses


def _answer(**kw) -> bytes:
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": kw.pop("parts", [{"text": "Hello"}])},
                "finishReason": kw.pop("finish", "STOP"),
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 18,
        },
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "resp1",
    }
    body.update(kw)
    return orjson.dumps(body)


def test_openai_response_usage_and_thoughts():
    out, usage = get_translator(Api.OPENAI, Api.GEMINI).response(
        _answer(parts=[{"text": "think", "thought": True}, {"text": "Hello"}])
    )
    obj = orjson.loads(out)
    assert obj["id"] == "resp1" and obj["model"] == "gemini-2.5-flash-001"
    assert obj["choices"][0]["message"]["content"] == "Hello"
    assert obj["choices"][0]["message"]["reasoning_content"] == "think"
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert obj["usage"]["completion_tokens"] == 8
    assert obj["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (10, 8, 4)


def test_function_calls_get_stable_ids():
    parts = [
        {"functionCall": {"name": "f", "args": {"a": 1}}},
        {"functionCall": {"id": "g1", "name": "g", "args": {}}},
    ]
    out, _ = get_translator(Api.ANTHROPIC, Api.GEMINI).response(_answer(parts=parts))
    obj = orjson.loads(out)
    assert obj["stop_reason"] == "tool_use"
    assert [(b["id"], b["name"], b["input"]) for b in obj["content"]] == [
        ("call_resp1_0", "f", {"a": 1}),
        ("g1", "g", {}),
    ]
    assert obj["usage"] == {
        "input_tokens": 6,
        "output_tokens": 8,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.parametrize("finish", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"])
def test_safety_finish_is_a_refusal(finish):
    out, _ = get_translator(Api.OPENAI, Api.GEMINI).response(_answer(parts=[], finish=finish))
    assert orjson.loads(out)["choices"][0]["finish_reason"] == "content_filter"
    out, _ = get_translator(Api.ANTHROPIC, Api.GEMINI).response(_answer(parts=[], finish=finish))
    assert orjson.loads(out)["stop_reason"] == "refusal"


def test_blocked_prompt_is_a_refusal():
    body = orjson.dumps(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}
    )
    out, usage = get_translator(Api.OPENAI, Api.GEMINI).response(body)
    assert orjson.loads(out)["choices"][0]["finish_reason"] == "content_filter"
    assert usage.input_tokens == 7
    out, _ = get_translator(Api.RESPONSES, Api.GEMINI).response(body)
    assert orjson.loads(out)["status"] in ("incomplete", "completed")


def test_no_candidates_no_reason_and_failures_are_502():
    with pytest.raises(GatewayError) as err:
        get_translator(Api.OPENAI, Api.GEMINI).response(b'{"usageMetadata": {}}')
    assert err.value.status == 502
    with pytest.raises(GatewayError) as err:
        get_translator(Api.OPENAI, Api.GEMINI).response(_answer(parts=[], finish="MALFORMED_FUNCTION_CALL"))
    assert err.value.status == 502 and "MALFORMED_FUNCTION_CALL" in err.value.message


def test_max_tokens_is_length():
    out, _ = get_translator(Api.OPENAI, Api.GEMINI).response(_answer(finish="MAX_TOKENS"))
    assert orjson.loads(out)["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------------------------- streams

_EV1 = b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],"modelVersion":"g","responseId":"r"}\r\n\r\n'
_EV2 = (
    b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"lo"},'
    b'{"functionCall":{"name":"f","args":{"a":1}}}]},"finishReason":"STOP","index":0}],'
    b'"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6},"modelVersion":"g","responseId":"r"}\r\n\r\n'
)


def test_stream_to_anthropic_byte_by_byte():
    st = get_translator(Api.ANTHROPIC, Api.GEMINI).stream(client_wants_usage=False)
    data = _EV1 + _EV2
    out = b"".join(st.feed(data[i : i + 1]) for i in range(len(data)))
    assert not st.done
    out += st.finish()
    assert st.done
    text = out.decode()
    assert text.count("event: message_start") == 1
    assert '"text_delta","text":"Hel"' in text and '"text_delta","text":"lo"' in text
    assert '"type":"tool_use","id":"call_r_0","name":"f"' in text
    assert '"partial_json":"{\\"a\\":1}"' in text
    assert '"stop_reason":"tool_use"' in text
    assert text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert (st.usage.input_tokens, st.usage.output_tokens) == (4, 2)


def test_stream_to_openai_cut_is_an_error():
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=True)
    out = st.feed(_EV1) + st.finish()
    assert out.rstrip().endswith(b"}") and b'"error"' in out.split(b"\n\n")[-2]


def test_stream_error_event_is_terminal():
    st = get_translator(Api.ANTHROPIC, Api.GEMINI).stream(client_wants_usage=False)
    out = st.feed(
        _EV1 + b'data: {"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}\n\n' + _EV2
    )
    assert b'"type":"rate_limit_error","message":"slow down"' in out
    assert b'"lo"' not in out
    assert st.done and st.finish() == b""


def test_stream_safety_block_and_malformed():
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=False)
    out = (
        st.feed(b'data: {"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"responseId":"r"}\n\n')
        + st.finish()
    )
    assert b'"finish_reason":"content_filter"' in out and out.endswith(b"data: [DONE]\n\n")
    st = get_translator(Api.OPENAI, Api.GEMINI).stream(client_wants_usage=False)
    out = st.feed(b"data: [1, 2]\n\n")
    assert b'"error"' in out and st.done


def test_stream_to_responses():
    st = get_translator(Api.RESPONSES, Api.GEMINI).stream(client_wants_usage=False)
    out = st.feed(_EV1 + _EV2) + st.finish()
    assert b"event: response.completed" in out
    assert b'"name":"f"' in out


# -------------------------------------------------------------------------------------- errors


GOOGLE_429 = b'{"error":{"code":429,"message":"Quota exceeded for model","status":"RESOURCE_EXHAUSTED"}}'


def test_parse_google_error():
    assert parse_provider_error(GOOGLE_429) == ("Quota exceeded for model", "RESOURCE_EXHAUSTED")


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES])
def test_google_errors_in_client_format(inbound):
    status, body = get_translator(inbound, Api.GEMINI).error(429, GOOGLE_429)
    obj = orjson.loads(body)
    assert status == 429 and obj["error"]["message"] == "Quota exceeded for model"
    assert obj["error"]["type"] == "rate_limit_error"


def test_passthrough_error_well_formedness():
    assert passthrough_error(Api.GEMINI, 429, GOOGLE_429) == (429, GOOGLE_429)
    status, body = passthrough_error(Api.GEMINI, 500, b'{"error":{"message":"x","status":"INTERNAL"}}')
    assert (status, orjson.loads(body)) == (
        500,
        {"error": {"code": 500, "message": "x", "status": "INTERNAL"}},
    )
    status, body = passthrough_error(Api.GEMINI, 503, b"<html>")
    assert orjson.loads(body)["error"]["status"] == "UNAVAILABLE"

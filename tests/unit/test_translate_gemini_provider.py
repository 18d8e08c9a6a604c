"""The Gemini codec's provider side, requests: OpenAI, Anthropic and Responses clients' bodies
encoded for a Gemini provider (answers: test_translate_gemini_answers.py)."""

from __future__ import annotations

import orjson
import pytest

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator

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

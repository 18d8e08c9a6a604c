"""Prompt token counting (offline tiktoken) and the output-token estimate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidegate.errors import Api
from sidegate.features.quota import TokenCounter, TokenizerConfig, max_output_tokens
from sidegate.features.quota.tokens import PER_MESSAGE, PER_NAME, REPLY_PRIMING, cl100k

COUNTER = TokenCounter()


def n(text: str) -> int:
    return len(cl100k().encode_ordinary(text))


def test_cl100k_is_offline_and_right() -> None:
    assert cl100k().encode_ordinary("hello world") == [15339, 1917]


def test_openai_chat_follows_the_documented_overhead() -> None:
    body = {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "name": "ann", "content": "What is the capital of France?"},
        ],
    }
    expected = (
        REPLY_PRIMING
        + 2 * PER_MESSAGE
        + n("system")
        + n("You are a helpful assistant.")
        + n("user")
        + n("ann")
        + PER_NAME
        + n("What is the capital of France?")
    )
    assert COUNTER.openai_chat(body) == expected
    assert COUNTER.count(Api.OPENAI, body) == expected


def test_openai_parts_images_tools_and_tool_calls() -> None:
    base = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
    parts = {
        "model": "gpt-4",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}],
            }
        ],
    }
    assert COUNTER.openai_chat(parts) == COUNTER.openai_chat(base) + 765
    tools = {
        **base,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    }
    assert COUNTER.openai_chat(tools) > COUNTER.openai_chat(base) + n("get_weather")
    call = {
        "model": "gpt-4",
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"city":"Paris"}'}}
            ]},
        ],
    }  # fmt: skip
    assert COUNTER.openai_chat(call) >= n('{"city":"Paris"}') + PER_MESSAGE


def test_special_token_text_is_ordinary_text() -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "<|endoftext|> and <|fim_prefix|>"}]}
    assert COUNTER.openai_chat(body) > 10


def test_anthropic_system_forms_and_blocks() -> None:
    as_str = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": "Be terse.",
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    as_blocks = {
        **as_str,
        "system": [{"type": "text", "text": "Be terse."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
    }
    assert COUNTER.anthropic_messages(as_str) == COUNTER.anthropic_messages(as_blocks)
    tool_turns = {
        **as_str,
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "w", "input": {"c": "P"}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny and warm"}],
            },
        ],
        "tools": [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}],
    }
    assert COUNTER.count(Api.ANTHROPIC, tool_turns) > COUNTER.anthropic_messages(as_str)


def test_claude_factor_and_o200k_fallback() -> None:
    msgs = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 20}]
    gpt4 = COUNTER.openai_chat({"model": "gpt-4", "messages": msgs})
    assert COUNTER.openai_chat({"model": "gpt-4o-mini", "messages": msgs}) == gpt4  # cl100k estimate
    c = TokenCounter(TokenizerConfig(claude_factor=1.5))
    claude = c.openai_chat({"model": "anthropic/claude-haiku-4-5", "messages": msgs})
    assert claude == round(gpt4 * 1.5)


def test_o200k_path_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="o200k_path"):
        TokenCounter(TokenizerConfig(o200k_path=tmp_path / "missing.tiktoken"))
    bogus = tmp_path / "o200k_base.tiktoken"
    bogus.write_text("aGVsbG8= 0\n")
    with pytest.raises(ValueError, match=r"[Hh]ash"):
        TokenCounter(TokenizerConfig(o200k_path=bogus))


def test_huge_prompts_are_extrapolated_close_to_exact() -> None:
    text = "Sidegate counts tokens of long prompts quickly and fairly. " * 4000  # ~240k chars
    exact = TokenCounter(TokenizerConfig(exact_chars=10_000_000))
    fast = TokenCounter(TokenizerConfig(exact_chars=20_000))
    body = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": text}, {"role": "user", "content": text}],
    }
    a, b = exact.openai_chat(body), fast.openai_chat(body)
    assert a * 0.98 <= b <= a * 1.02


def test_count_async_matches_count() -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "word " * 50_000}]}
    small = asyncio.run(COUNTER.count_async(Api.OPENAI, body, body_bytes=10))
    threaded = asyncio.run(COUNTER.count_async(Api.OPENAI, body, body_bytes=10**6))
    assert small == threaded == COUNTER.count(Api.OPENAI, body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 4096),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 50, "max_tokens": 100}, 50),
        ({"max_output_tokens": 70}, 70),
        ({"max_tokens": 100, "n": 3}, 300),
        ({"n": 2}, 8192),
        ({"max_tokens": "lots"}, 4096),
        ({"max_tokens": True}, 4096),
    ],
)
def test_max_output_tokens(body: dict, expected: int) -> None:
    assert max_output_tokens(body, 4096) == expected


def test_repeated_texts_are_encoded_once_and_the_memo_is_bounded(monkeypatch):
    c = TokenCounter()
    history = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me about Paris."}]
    first = c.count(Api.OPENAI, {"model": "gpt-4o-mini", "messages": history})
    calls = []
    real = c._cl100k.encode_ordinary
    monkeypatch.setattr(c._cl100k, "encode_ordinary", lambda text: calls.append(text) or real(text))
    turn = [*history, {"role": "assistant", "content": "A city."}, {"role": "user", "content": "More?"}]
    second = c.count(Api.OPENAI, {"model": "gpt-4o-mini", "messages": turn})
    assert calls == ["assistant", "A city.", "More?"]  # the history and the roles were remembered
    monkeypatch.undo()
    assert second == TokenCounter().count(Api.OPENAI, {"model": "gpt-4o-mini", "messages": turn})
    assert first == TokenCounter().count(Api.OPENAI, {"model": "gpt-4o-mini", "messages": history})
    c.MEMO_ENTRIES = 3  # type: ignore[misc]
    c.count(Api.OPENAI, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"} for i in range(9)]})
    assert all(len(m) <= 3 for m in c._memo.values())
    assert not any(isinstance(k, str) for m in c._memo.values() for k in m)  # no prompt text is kept

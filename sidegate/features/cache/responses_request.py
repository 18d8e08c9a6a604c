"""A Responses API request as the cache sees it: the answer-changing fields in one normal form.

The Responses API lets a client say the same thing several ways: `input: "hi"` is one user message;
a message item may omit `type`; its content may be a string or text parts; `null` is an absent field;
`text.format: {"type": "text"}`, `tool_choice: "auto"`, `parallel_tool_calls: true`,
`truncation: "disabled"` and `tools: []` are the defaults. Each pair asks the model the same thing,
so each pair gets one key. The last item, when it is a user message, is the question: its content
makes the exact key and, made of text only, the semantic query (as for chat).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ECHOED_FIELDS", "RESPONSES_IGNORED", "responses_echo", "responses_params"]

RESPONSES_IGNORED = frozenset({"prompt_cache_retention", "prompt_cache_options"})
"""Responses-only fields that never change the answer (provider prompt-cache hints), on top of the
fields every API ignores (`stream`, `metadata`, `store`, `user`...)."""

ECHOED_FIELDS = (
    "metadata", "user", "store", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
    "prompt_cache_options",
)  # fmt: skip
"""Request fields a Responses answer echoes although they are not in the key: a hit carries the
asking request's values, never those of the request that filled the entry."""

_DEFAULTS: dict[str, Any] = {
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "truncation": "disabled",
    "tools": [],
}
_TEXT_FORMAT_DEFAULT = {"type": "text"}
_NO_DEFAULT = object()
"""What a field without a default in the table equals: nothing (it is never dropped)."""


def _parts(content: Any, role: Any) -> Any:
    """A message's content as parts (a string is one text part of the role's kind)."""
    if isinstance(content, str):
        return [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    return content


def _item(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    if item.get("type", "message") != "message" or "role" not in item:
        return item
    if "type" in item and not isinstance(item.get("content"), str) and None not in item.values():
        return item  # already in normal form: no copy
    out = {k: v for k, v in item.items() if v is not None}
    out["type"] = "message"
    out["content"] = _parts(item.get("content"), item.get("role"))
    return out


def _query(content: Any) -> str | None:
    """The text of a user message made only of text parts; else None (images, files: exact only)."""
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for part in content:
        if (
            not isinstance(part, dict)
            or part.get("type") != "input_text"
            or not isinstance(part.get("text"), str)
        ):
            return None
        texts.append(part["text"])
    return "\n".join(texts)


def responses_params(params: dict[str, Any]) -> tuple[dict[str, Any], Any, str | None]:
    """(the scope's fields, the last user message's content, its text for the semantic index).

    `params` are the body's fields without the ignored ones; a new dict is returned."""
    out = {
        k: v
        for k, v in params.items()
        if v is not None and k not in RESPONSES_IGNORED and _DEFAULTS.get(k, _NO_DEFAULT) != v
    }
    text = out.get("text")
    if isinstance(text, dict) and text.get("format") == _TEXT_FORMAT_DEFAULT:
        text = {k: v for k, v in text.items() if k != "format"}
        if text:
            out["text"] = text
        else:
            del out["text"]
    raw = out.get("input")
    items = [_item({"role": "user", "content": raw})] if isinstance(raw, str) else raw
    last_content: Any = None
    query: str | None = None
    if isinstance(items, list):
        items = [_item(i) for i in items]
        last = items[-1] if items else None
        if isinstance(last, dict) and last.get("type") == "message" and last.get("role") == "user":
            last_content = last.get("content")
            query = _query(last_content)
            items[-1] = {k: v for k, v in last.items() if k != "content"}
        out["input"] = items
    return out, last_content, query


def responses_echo(body: Mapping[str, Any]) -> dict[str, Any]:
    """The echoed fields a replayed answer takes from the asking request (absent: the API's default)."""
    echo = {k: body.get(k) for k in ECHOED_FIELDS}
    echo["metadata"] = echo["metadata"] or {}
    if not isinstance(echo["store"], bool):
        echo["store"] = True
    return echo

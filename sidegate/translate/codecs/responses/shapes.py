"""The Responses API's shapes shared by its answer and stream codecs: output items, the response
envelope and the echo of its request, usage in the API's words, and the id factory.

A Responses client needs ids of its own kinds (``resp_``, ``msg_``, ``fc_``, ``rs_``): they come
from an injectable factory (fixed in golden tests), never from the provider's ids, so the gateway
can keep the answers it served under an id that no provider knows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import orjson

from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import Part, Text, Thinking, ToolCall
from sidegate.translate.common import as_count, as_dict, as_list, as_str, dumps

IdFactory = Callable[[str], str]
"""``prefix`` (``resp``, ``msg``, ``fc``, ``rs``) -> a fresh id such as ``resp_<hex>``."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(24).hex()}"


# What a Responses answer echoes of its request when the gateway does not know the request: the
# API's defaults (the SDK requires tools, tool_choice and parallel_tool_calls in every answer).
DEFAULT_ECHO: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def request_echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request's fields as the Responses API echoes them in its answer (defaults filled in)."""
    echo = dict(DEFAULT_ECHO)
    for key in DEFAULT_ECHO:
        value = body.get(key)
        if value is not None:
            echo[key] = value
    if body.get("safety_identifier") is not None:
        echo["safety_identifier"] = body["safety_identifier"]
    return echo


# ---------------------------------------------------------------------------------------- usage


def responses_usage(usage: Usage, thinking_tokens: int | None = None) -> dict[str, Any]:
    """:class:`Usage` as a Responses client reads it (input tokens include the cached ones)."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_creation_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": thinking_tokens or 0},
        "total_tokens": usage.total_tokens,
    }


def parse_responses_usage(u: Any) -> tuple[Usage, int | None] | None:
    """A Responses ``usage`` object -> (Usage, reasoning tokens), or None when absent."""
    if not isinstance(u, dict):
        return None
    prompt = as_count(u.get("input_tokens"))
    details = as_dict(u.get("input_tokens_details"))
    cached = min(as_count(details.get("cached_tokens")), prompt)
    written = min(as_count(details.get("cache_write_tokens")), prompt - cached)
    reasoning = as_dict(u.get("output_tokens_details")).get("reasoning_tokens")
    usage = Usage(prompt, as_count(u.get("output_tokens")), cached, written)
    return usage, (as_count(reasoning) if reasoning is not None else None)


# ------------------------------------------------------------------------------ provider: decode


def _reasoning_text(item: dict[str, Any]) -> str:
    texts = [as_str(as_dict(p).get("text")) for p in as_list(item.get("content"))]
    if not any(texts):
        texts = [as_str(as_dict(p).get("text")) for p in as_list(item.get("summary"))]
    return "".join(texts)


def tool_input(arguments: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def output_parts(output: Any) -> list[Part]:
    """Output items -> form parts. Items of built-in tools cannot occur (the codec never sends
    built-in tools) and are skipped like any unknown item."""
    content: list[Part] = []
    for item in as_list(output):
        item = as_dict(item)
        kind = item.get("type")
        if kind == "message":
            for part in as_list(item.get("content")):
                part = as_dict(part)
                text = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
                if isinstance(text, str) and text:
                    content.append(Text(text))
        elif kind == "function_call":
            args = as_str(item.get("arguments"))
            content.append(
                ToolCall(as_str(item.get("call_id")), as_str(item.get("name")), tool_input(args), args)
            )
        elif kind == "reasoning":
            text = _reasoning_text(item)
            signature = as_str(item.get("encrypted_content"))
            if text or signature:
                content.append(Thinking(text, signature))
    return content


def stop_of(body: dict[str, Any], content: list[Part]) -> str:
    reason = as_dict(body.get("incomplete_details")).get("reason")
    if reason == "max_output_tokens":
        return "length"
    if reason == "content_filter":
        return "refusal"
    return "tool_use" if any(type(p) is ToolCall for p in content) else "end"


# -------------------------------------------------------------------------------- client: encode


def output_items(content: list[Part], ids: IdFactory, status: str) -> list[dict[str, Any]]:
    """Form parts -> output items: consecutive texts one message, each tool call a function_call,
    each thinking a reasoning item (the provider's signature in ``encrypted_content``, so a client
    that sends the item back gives Anthropic the signature it requires)."""
    out: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            out.append(message_item(ids("msg"), "".join(texts), status))
            texts.clear()

    for part in content:
        if type(part) is Text:
            texts.append(part.text)
            continue
        flush()
        if type(part) is ToolCall:
            args = part.raw if part.raw is not None else dumps(part.input).decode()
            out.append(function_item(ids("fc"), part.id, part.name, args, "completed"))
        elif type(part) is Thinking:
            out.append(reasoning_item(ids("rs"), part.text, part.signature))
    flush()
    return out


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "content": content, "role": "assistant"}


def function_item(item_id: str, call_id: str, name: str, args: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": args,
        "call_id": call_id,
        "name": name,
    }


def reasoning_item(item_id: str, text: str | None, signature: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
    item["content"] = [] if text is None else [{"type": "reasoning_text", "text": text}]
    if signature:
        item["encrypted_content"] = signature
    return item


INCOMPLETE = {"length": "max_output_tokens", "refusal": "content_filter"}


def envelope(
    resp_id: str, model: str, created: int, status: str, echo: dict[str, Any] | None
) -> dict[str, Any]:
    """The response object around the output (``output`` and ``usage`` filled in by the caller)."""
    out: dict[str, Any] = {
        "id": resp_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
    }
    out.update(echo or DEFAULT_ECHO)
    out["usage"] = None
    return out

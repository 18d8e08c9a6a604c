"""What the Gemini request, response and stream codecs share: the finish-reason vocabulary, token
usage in Google's words, tool-call ids, and the ``parts`` of a model turn in both directions.

Gemini's wire shapes (REST, camelCase) are google-genai's ``google.genai.types``: a turn is a
``Content`` ``{role: user|model, parts: [Part]}``, a ``Part`` holds exactly one of ``text``
(``thought: true`` for a thought summary), ``inlineData``, ``fileData``, ``functionCall`` or
``functionResponse``, plus an optional ``thoughtSignature``.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import Part, Text, Thinking, ToolCall
from sidegate.translate.common import as_count, as_dict, as_list, as_str, loads_object

__all__ = [
    "BLOCKED_FINISHES",
    "FAILED_FINISHES",
    "FINISH_OUT",
    "block_reason",
    "call_id",
    "failed_message",
    "finish_in",
    "first_candidate",
    "gemini_usage",
    "model_parts",
    "parse_usage",
    "tool_args",
]

# Google's finish reasons that mean "the answer was withheld or cut by a policy filter": the
# client's refusal / content-filter finish (OpenAI ``content_filter``, Anthropic ``refusal``).
BLOCKED_FINISHES = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "MODEL_ARMOR",
        "JAILBREAK",
    }
)
# Finish reasons that mean the model failed to produce an answer at all (not a policy decision):
# with nothing generated, the client gets an error (502, so a fallback can serve it), never an
# empty success.
FAILED_FINISHES = frozenset(
    {
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
        "NO_IMAGE",
    }
)
# The form's stop -> Gemini's finishReason (Gemini says STOP after a function call too, and does
# not say which stop sequence matched).
FINISH_OUT = {
    "end": "STOP",
    "stop_sequence": "STOP",
    "pause": "STOP",
    "tool_use": "STOP",
    "length": "MAX_TOKENS",
    "refusal": "SAFETY",
}


def finish_in(reason: str, has_calls: bool) -> str:
    """Gemini's finishReason -> the form's stop (``tool_use`` when the turn holds function calls)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in BLOCKED_FINISHES:
        return "refusal"
    return "tool_use" if has_calls else "end"


def failed_message(reason: str) -> str:
    """The 502 / stream failure for a model failure with nothing generated (``FAILED_FINISHES``)."""
    return f"The provider could not produce an answer (finish reason {reason})."


def call_id(raw: Any, response_id: str, index: int) -> str:
    """A function call's id: Gemini's own when it sent one, else a stable synthetic one (the same
    answer always gets the same ids; the response id keeps them apart across turns)."""
    if isinstance(raw, str) and raw:
        return raw
    return f"call_{response_id}_{index}" if response_id.isalnum() else f"call_{index}"


def tool_args(args: Any) -> dict[str, Any]:
    return args if isinstance(args, dict) else {}


def model_parts(parts: list[Any], response_id: str, first_call: int = 0) -> tuple[list[Part], int]:
    """A model turn's parts -> form parts (read leniently: a part of a kind the form has no place
    for, such as executable code, is skipped). Returns the parts and the function-call count."""
    out: list[Part] = []
    calls = first_call
    for part in parts:
        if type(part) is not dict:
            continue
        text = part.get("text")
        if type(text) is str:
            if part.get("thought") is True:
                out.append(Thinking(text, as_str(part.get("thoughtSignature"))))
            elif text:
                out.append(Text(text))
            continue
        fc = part.get("functionCall")
        if type(fc) is dict:
            args = tool_args(fc.get("args"))
            out.append(ToolCall(call_id(fc.get("id"), response_id, calls), as_str(fc.get("name")), args))
            calls += 1
    return out, calls - first_call


def parse_usage(u: Any) -> tuple[Usage | None, int | None]:
    """``usageMetadata`` -> (Usage, thinking tokens). Output is candidates + thoughts (what Google
    bills as output); tool-use prompt tokens are prompt tokens; the cached count is a part of the
    prompt count."""
    if type(u) is not dict:
        return None, None
    prompt = as_count(u.get("promptTokenCount")) + as_count(u.get("toolUsePromptTokenCount"))
    thoughts = u.get("thoughtsTokenCount")
    thinking = as_count(thoughts) if thoughts is not None else None
    usage = Usage(
        input_tokens=prompt,
        output_tokens=as_count(u.get("candidatesTokenCount")) + (thinking or 0),
        cached_tokens=min(as_count(u.get("cachedContentTokenCount")), prompt),
    )
    return usage, thinking


def gemini_usage(usage: Usage, thinking: int | None) -> dict[str, Any]:
    """Usage as a Gemini client reads it (``candidatesTokenCount`` excludes the thoughts)."""
    thoughts = min(thinking or 0, usage.output_tokens)
    out: dict[str, Any] = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens - thoughts,
        "totalTokenCount": usage.total_tokens,
    }
    if usage.cached_tokens:
        out["cachedContentTokenCount"] = usage.cached_tokens
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    return out


def first_candidate(body: dict[str, Any]) -> dict[str, Any]:
    candidates = as_list(body.get("candidates"))
    return as_dict(candidates[0]) if candidates else {}


def block_reason(body: dict[str, Any]) -> str | None:
    """``promptFeedback.blockReason``: the prompt itself was blocked (then there are no candidates)."""
    reason = as_dict(body.get("promptFeedback")).get("blockReason")
    return reason if isinstance(reason, str) and reason else None


def retry_delay(body: bytes) -> float | None:
    """Seconds from a Google error body's `google.rpc.RetryInfo` detail (`retryDelay: "9s"`), where
    Google says when to retry a 429 (its answers carry no `retry-after` header); None without one."""
    if b"RetryInfo" not in body:  # (most errors: no parse)
        return None
    obj = loads_object(body)
    if obj is None and body.lstrip()[:1] == b"[":  # the streaming endpoints' `[{"error": ...}]`
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        obj = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None
    for detail in as_list(as_dict(as_dict(obj).get("error")).get("details")):
        detail = as_dict(detail)
        delay = detail.get("retryDelay")
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo") and isinstance(delay, str):
            try:
                return max(float(delay.removesuffix("s")), 0.0)
            except ValueError:
                return None
    return None

"""The cache's Gemini API parts (a google-genai client's `generateContent` / `streamGenerateContent`):
the request's key fields, which answers may be stored, a stream rebuilt into one answer, and a hit
replayed as JSON or as a one-chunk stream.

The answer is a GenerateContentResponse (`candidates`, `usageMetadata`, `modelVersion`,
`responseId`); a stream is a sequence of them (`data: {...}` events, no names), each a piece of the
whole: one chunk holding everything is a valid stream, which is how a hit is replayed.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from sidegate.config.cache import CachePolicy
from sidegate.sse import SseParser, encode_event

__all__ = ["gemini_json", "gemini_params", "gemini_refusal", "gemini_sse", "reassemble_gemini"]

_DONE = frozenset({"STOP", "MAX_TOKENS"})


def gemini_params(params: dict[str, Any]) -> tuple[dict[str, Any], Any, str | None, float]:
    """(the key's fields, the question's content, its text for the semantic index, temperature).
    The question is the last content when the user sent it: its parts make the exact key and,
    made of text only, the semantic query; the earlier turns and everything else make the scope."""
    # (`cachedContent` stays in the key: it names prompt content stored on Google's side that the
    # request no longer carries, so it changes the answer)
    params = dict(params)  # (its `contents` is replaced below: never the caller's dict)
    config = params.get("generationConfig", params.get("generation_config"))
    temp = config.get("temperature") if isinstance(config, dict) else None
    temperature = float(temp) if isinstance(temp, int | float) and not isinstance(temp, bool) else 1.0
    contents = params.get("contents")
    if not isinstance(contents, list) or not contents or not isinstance(contents[-1], dict):
        return params, None, None, temperature
    last = contents[-1]
    if last.get("role", "user") != "user":
        return params, None, None, temperature
    parts = last.get("parts")
    texts = (
        [p.get("text") for p in parts]
        if isinstance(parts, list) and all(isinstance(p, dict) for p in parts)
        else []
    )
    text_only = bool(texts) and all(
        isinstance(t, str) and len(p) == 1 for t, p in zip(texts, parts, strict=True)
    )
    params["contents"] = [*contents[:-1], {k: v for k, v in last.items() if k != "parts"}]
    return params, parts, "\n".join(texts) if text_only else None, temperature


def gemini_refusal(response: dict[str, Any], policy: CachePolicy) -> str | None:
    """Why a Gemini answer must not be cached (None: it may): finished candidates only (`STOP`,
    `MAX_TOKENS`; a safety block or recitation stop is no answer to replay), function calls only
    when the policy caches tool calls."""
    candidates = response.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        return "no_candidates"
    for cand in candidates:
        if not isinstance(cand, dict):
            return "bad_candidate"
        reason = cand.get("finishReason")
        if reason not in _DONE:
            return f"finish_reason:{reason}"
        content = cand.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        calls = isinstance(parts, list) and any(isinstance(p, dict) and "functionCall" in p for p in parts)
        if calls and not policy.cache_tool_calls:
            return "tool_calls"
    return None


def reassemble_gemini(stream: bytes) -> dict[str, Any] | None:
    """One GenerateContentResponse from a whole stream: each candidate's parts in order (adjacent
    text parts of the same kind joined), its last finish reason, the last usage; None when the
    stream carried an error or ended without every candidate's finish reason."""
    out: dict[str, Any] = {}
    candidates: dict[int, dict[str, Any]] = {}
    try:
        for ev in SseParser().feed(stream if stream.endswith(b"\n\n") else stream + b"\n\n"):
            chunk = orjson.loads(ev.data)
            if not isinstance(chunk, dict) or "error" in chunk:
                return None
            for key in ("usageMetadata", "modelVersion", "responseId", "promptFeedback"):
                if key in chunk:
                    out[key] = chunk[key]
            for cand in chunk.get("candidates") or []:
                _merge(candidates.setdefault(int(cand.get("index", 0)), {}), cand)
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return None
    if not candidates or any("finishReason" not in c for c in candidates.values()):
        return None
    return {"candidates": [candidates[i] for i in sorted(candidates)], **out}


def _merge(into: dict[str, Any], cand: dict[str, Any]) -> None:
    for key, value in cand.items():
        if key != "content":
            into[key] = value
            continue
        content = into.setdefault("content", {"parts": [], "role": value.get("role", "model")})
        parts = content["parts"]
        for part in value.get("parts") or []:
            last = parts[-1] if parts else None
            if (isinstance(last, dict) and isinstance(last.get("text"), str) and set(part) <= {"text", "thought"}
                    and isinstance(part.get("text"), str) and bool(last.get("thought")) == bool(part.get("thought"))
                    and set(last) <= {"text", "thought"}):  # fmt: skip
                last["text"] += part["text"]
            else:
                parts.append(dict(part))


def _fresh(response: dict[str, Any]) -> dict[str, Any]:
    return {**response, "responseId": secrets.token_urlsafe(16)}


def gemini_json(response: dict[str, Any]) -> bytes:
    return orjson.dumps(_fresh(response))


def gemini_sse(response: dict[str, Any]) -> bytes:
    """The whole answer as one stream chunk (finish reason and usage included)."""
    return encode_event(None, orjson.dumps(_fresh(response)))

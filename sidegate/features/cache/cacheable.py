"""Which complete responses may be stored: successful, finished answers only."""

from __future__ import annotations

from typing import Any

from sidegate.config.cache import CachePolicy
from sidegate.errors import Api

from .gemini_answer import gemini_refusal
from .responses_answer import responses_refusal

_OPENAI_DONE = frozenset({"stop", "length"})
_OPENAI_TOOLS = frozenset({"tool_calls", "function_call"})
_ANTHROPIC_DONE = frozenset({"end_turn", "max_tokens", "stop_sequence"})
_ANTHROPIC_TOOLS = frozenset({"tool_use"})


def refusal_reason(api: Api, response: Any, policy: CachePolicy) -> str | None:
    """Why `response` (a parsed client-format non-streaming JSON body) must not be cached; None if it may."""
    if not isinstance(response, dict):
        return "not_an_object"
    if "error" in response and response.get("error") is not None:
        return "error"
    if api is Api.RESPONSES:
        return responses_refusal(response, policy)
    if api is Api.GEMINI:
        return gemini_refusal(response, policy)
    if api is Api.OPENAI:
        if response.get("object") != "chat.completion":
            return "not_a_completion"
        choices = response.get("choices")
        if not isinstance(choices, list) or not choices:
            return "no_choices"
        allowed = _OPENAI_DONE | _OPENAI_TOOLS if policy.cache_tool_calls else _OPENAI_DONE
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
                return "bad_choice"
            reason = choice.get("finish_reason")
            if reason not in allowed:
                return f"finish_reason:{reason}"
            if choice["message"].get("tool_calls") and not policy.cache_tool_calls:
                return "tool_calls"
        return None
    if response.get("type") != "message" or not isinstance(response.get("content"), list):
        return "not_a_message"
    allowed = _ANTHROPIC_DONE | _ANTHROPIC_TOOLS if policy.cache_tool_calls else _ANTHROPIC_DONE
    reason = response.get("stop_reason")
    if reason not in allowed:
        return f"stop_reason:{reason}"
    if not policy.cache_tool_calls and any(
        isinstance(b, dict) and b.get("type") in ("tool_use", "server_tool_use") for b in response["content"]
    ):
        return "tool_calls"
    return None


def embeddings_refusal(response: Any) -> str | None:
    """Why an embeddings answer must not be cached (None: it may): a whole list of embeddings only."""
    if not isinstance(response, dict) or response.get("error") is not None:
        return "error"
    if response.get("object") != "list" or not isinstance(response.get("data"), list) or not response["data"]:
        return "not_embeddings"
    return None

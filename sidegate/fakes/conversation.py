"""The conversation rules the real APIs enforce beyond the request types: tool calls and their results
come in pairs.

A gateway that drops, reorders or mistranslates a tool call or its result (across APIs, or when it
expands a stored conversation) gets the same 400 from the fake as from the provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidegate.fakes import wire_responses

__all__ = ["Conversations", "chat_pairing", "messages_pairing", "responses_pairing"]

# What the fake remembers of a response it issued (by id): its own `previous_response_id`, the calls
# it made (the next request must answer them) and every call of its conversation so far.
PreviousCalls = Callable[[str], tuple[str | None, frozenset[str], frozenset[str]] | None]


class Conversations:
    """The Responses API ids one fake issued (the newest `cap`), each with its own previous id, the
    calls it made and every call of its conversation: `previous_response_id` must name one of them
    (another provider's id is unknown upstream too), and its calls must be answered."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._known: dict[str, tuple[str | None, frozenset[str], frozenset[str]]] = {}

    def issue(self, body: dict[str, Any], calls: frozenset[str]) -> str:
        """A new response id for the answer to `body`, which makes `calls`."""
        resp_id = wire_responses.new_id()
        prev = body.get("previous_response_id")
        prev = prev if isinstance(prev, str) else None
        before = self._known.get(prev) if prev else None
        history = (before[2] if before else frozenset()) | input_calls(body) | calls
        self._known[resp_id] = (prev, calls, history)
        if len(self._known) > self._cap:  # the oldest id goes first
            del self._known[next(iter(self._known))]
        return resp_id

    def problem(self, endpoint: str, body: dict[str, Any]) -> str | dict[str, Any] | None:
        """The real APIs' 400 for a conversation that does not hold together, or None."""
        if endpoint == "responses":
            prev = body.get("previous_response_id")
            if isinstance(prev, str) and prev not in self._known:
                return {
                    "message": f"Previous response with id '{prev}' not found.",
                    "param": "previous_response_id",
                    "code": "previous_response_not_found",
                }
            return responses_pairing(body, self._known.get)
        if endpoint in ("chat", "azure_chat"):
            return chat_pairing(body)
        if endpoint == "messages":
            return messages_pairing(body)
        return None


def responses_pairing(body: dict[str, Any], previous: PreviousCalls) -> dict[str, Any] | None:
    """Every `function_call_output` answers a call (in `input` or an earlier response of the chain
    of `previous_response_id`), and every call, in `input` or in the previous response, gets one."""
    items = body.get("input")
    if not isinstance(items, list):
        items = []
    calls: list[str] = []
    outputs: set[str] = set()
    earlier: set[str] = set()
    pending: list[str] = []  # the previous response's calls: this input must answer them
    prev = body.get("previous_response_id")
    seen = 0
    while isinstance(prev, str) and seen < 1000:
        found = previous(prev)
        if found is None:
            break
        if seen == 0:
            pending = sorted(found[1])
        earlier |= found[2]
        prev, seen = found[0], seen + 1
    for item in items:
        if not isinstance(item, dict):
            continue
        call_id = item.get("call_id")
        if item.get("type") == "function_call" and isinstance(call_id, str):
            calls.append(call_id)
        elif item.get("type") == "function_call_output" and isinstance(call_id, str):
            if call_id not in calls and call_id not in earlier:
                return _input_error(f"No tool call found for function call output with call_id {call_id}.")
            outputs.add(call_id)
    for call_id in [*pending, *calls]:
        if call_id not in outputs:
            return _input_error(f"No tool output found for function call {call_id}.")
    return None


def input_calls(body: dict[str, Any]) -> frozenset[str]:
    """The `call_id`s of the `function_call` items a Responses request's input carries."""
    items = body.get("input")
    if not isinstance(items, list):
        return frozenset()
    return frozenset(
        i["call_id"]
        for i in items
        if isinstance(i, dict) and i.get("type") == "function_call" and isinstance(i.get("call_id"), str)
    )


def _input_error(message: str) -> dict[str, Any]:
    return {"message": message, "param": "input", "code": None}


def chat_pairing(body: dict[str, Any]) -> dict[str, Any] | None:
    """A `tool` message answers a `tool_calls` entry of the assistant message before it, and each
    such entry gets its `tool` message before the next non-tool message."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    open_calls: list[str] = []
    opened_at = -1
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role == "tool":
            if msg.get("tool_call_id") not in open_calls:
                return {
                    "message": "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    "param": f"messages.[{i}].role",
                    "code": None,
                }
            open_calls.remove(msg["tool_call_id"])
            continue
        if open_calls:
            return _unanswered_chat(opened_at, open_calls)
        calls = msg.get("tool_calls") if role == "assistant" else None
        open_calls = [c.get("id") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
        opened_at = i
    if open_calls:
        return _unanswered_chat(opened_at, open_calls)
    return None


def _unanswered_chat(at: int, ids: list[str]) -> dict[str, Any]:
    return {
        "message": "An assistant message with 'tool_calls' must be followed by tool messages responding "
        f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
        "param": f"messages.[{at}].role",
        "code": None,
    }


def _blocks(msg: Any, kind: str, key: str) -> list[str]:
    content = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(content, list):
        return []
    return [str(b.get(key)) for b in content if isinstance(b, dict) and b.get("type") == kind]


def messages_pairing(body: dict[str, Any]) -> str | None:
    """Anthropic: the `tool_use` blocks of an assistant turn are answered by `tool_result` blocks in
    the very next (user) message, and a `tool_result` answers a `tool_use` of the turn before."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for i, msg in enumerate(messages):
        uses = _blocks(msg, "tool_use", "id")
        results = _blocks(msg, "tool_result", "tool_use_id")
        before = _blocks(messages[i - 1], "tool_use", "id") if i else []
        stray = [r for r in results if r not in before]
        if stray:
            return (
                f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{', '.join(stray)}. Each `tool_result` block must have a corresponding `tool_use` "
                "block in the previous message."
            )
        if uses and i + 1 < len(messages):
            answered = _blocks(messages[i + 1], "tool_result", "tool_use_id")
            missing = [u for u in uses if u not in answered]
            if missing:
                return (
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                    "`tool_result` block in the next message."
                )
    return None

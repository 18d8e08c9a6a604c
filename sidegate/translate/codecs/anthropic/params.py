"""What an Anthropic Messages client may send to a provider of another API: the parameter policy
(mapped, dropped, refused) and the validation of the content the form has a place for. Mapping
table: docs/translation.md, "Anthropic client -> OpenAI provider".

Kept apart from :mod:`.request` so the policy reads as one table, the way the docs present it.
"""

from __future__ import annotations

from typing import Any

from sidegate.translate.codecs.form import Tool, ToolChoice
from sidegate.translate.common import bad_param, need_str

__all__ = [
    "DROPPED",
    "MAPPED",
    "REFUSED",
    "check_extras",
    "source",
    "tool_choice",
    "tool_result_text",
    "tools",
]

# Parameters the canonical form has a field for.
MAPPED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    }
)
# Parameters that only steer Anthropic's own servers (where to cache, which capacity or region,
# how to trim the context it keeps, how to bill, what to diagnose): another provider has no such
# server, and the answer means the same without them, so they are accepted and not forwarded.
DROPPED = frozenset(
    {
        "cache_control",  # prompt-cache breakpoint (also dropped on every block, system text and tool)
        "context_management",  # server-side trimming of old tool results / thinking: the provider gets it all
        "service_tier",  # priority or standard capacity at Anthropic
        "speed",  # Anthropic's fast inference mode
        "inference_geo",  # Anthropic's region: the route's provider decides where inference runs
        "diagnostics",  # asks Anthropic to explain its prompt-cache misses
        "fallbacks",  # Anthropic's own model fallback on a policy decline (the gateway has its own)
        "fallback_credit_token",  # Anthropic billing of a retry after a refusal
        "billing_policy",  # who Anthropic bills
    }
)
# Parameters another provider cannot honour without changing what the answer means: refused with
# a 400 naming them (the reason is the message's second half).
REFUSED: dict[str, str] = {
    "container": "",  # files and skills in Anthropic's code-execution sandbox
    "mcp_servers": "MCP servers are called by Anthropic's servers; this provider cannot call them",
    "compaction": "a compaction request asks Anthropic to summarise the conversation",
    "thread": "the conversation is held on Anthropic's servers; send the whole conversation instead",
}


def check_extras(extras: dict[str, Any]) -> None:
    """The form's ``check_extras`` for Anthropic clients: Anthropic parameters outside the form, sent
    to another API, key by key so the first offender is the one named. Unknown parameters are
    refused: the gateway cannot know whether they change the answer."""
    for key, value in extras.items():
        if key in DROPPED or value is None:
            continue
        if key == "thread" and isinstance(value, dict) and value.get("type") == "create":
            continue  # asks Anthropic to keep this conversation: nothing to keep elsewhere
        reason = REFUSED.get(key)
        tail = f": {reason}." if reason else "."
        raise bad_param(key, f"Parameter {key!r} is not supported for this model{tail}")


def source(block: dict[str, Any]) -> dict[str, Any]:
    """The ``source`` object of an image or document block."""
    src = block.get("source") or {}
    if not isinstance(src, dict):
        raise bad_param("messages", "content block source must be an object.")
    return src


def tool_result_text(block: dict[str, Any]) -> str:
    """A ``tool_result``'s text: other APIs take a tool's output as text only."""
    content = block.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind != "text":
                raise bad_param(
                    "messages", f"tool_result content of type {kind!r} is not supported upstream."
                )
            parts.append(need_str(item.get("text", ""), "messages", "tool_result text"))
        return "".join(parts)
    raise bad_param("messages", "tool_result content must be a string or a list of text blocks.")


# Client-run tools whose schema only Anthropic's models know (bash, text editor, memory, computer):
# another model would get a name without a schema.
_SCHEMA_LESS_TOOLS = ("bash_", "text_editor_", "memory_", "computer_")


def tools(value: Any) -> list[Tool]:
    """Custom (client-run) tools. A server tool runs on Anthropic's servers: another provider
    cannot run it, and dropping it would change what the model can do, so it is refused. A custom
    tool's Anthropic-only fields (``cache_control``, ``defer_loading``, ``allowed_callers``,
    ``eager_input_streaming``, ``input_examples``) steer Anthropic's tool runner or its cache and
    are dropped."""
    if not isinstance(value, list):
        raise bad_param("tools", "tools must be a list.")
    out = []
    for tool in value:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and kind.startswith(_SCHEMA_LESS_TOOLS):
                raise bad_param(
                    "tools",
                    f"tool type {kind!r} (an Anthropic-defined tool) is not supported upstream: "
                    "declare it as a custom tool with an input_schema.",
                )
            raise bad_param("tools", f"tool type {kind!r} (a server tool) is not supported upstream.")
        name = need_str(tool.get("name", ""), "tools", "tool name")
        desc = need_str(tool["description"], "tools", "tool description") if tool.get("description") else None
        schema = tool.get("input_schema") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict):
            raise bad_param("tools", "tool input_schema must be an object.")
        out.append(Tool(name, desc, schema, bool(tool.get("strict"))))
    return out


def tool_choice(choice: Any) -> ToolChoice:
    """Anthropic ``tool_choice``: the form uses the same words (auto, any, tool, none)."""
    if not isinstance(choice, dict):
        raise bad_param("tool_choice", "tool_choice must be an object.")
    kind = choice.get("type")
    name = None
    if kind == "tool":
        name = need_str(choice.get("name", ""), "tool_choice", "name")
    elif kind not in ("auto", "any", "none"):
        raise bad_param("tool_choice", f"tool_choice type {kind!r} is not supported upstream.")
    return ToolChoice(kind, name, disable_parallel=bool(choice.get("disable_parallel_tool_use")))

"""OpenAI Chat Completions shapes built from Anthropic Messages parts (system, content blocks,
tool results, tools, tool_choice): what every pair with an Anthropic client and an OpenAI chat (or
OpenAI-compatible) provider needs to say a conversation in chat form. Mapping table:
docs/translation.md.
"""

from __future__ import annotations

from typing import Any

from sidegate.translate.common import bad_param, dumps, need_str

__all__ = ["openai_messages", "openai_tool_choice", "openai_tools"]


def _source(block: dict[str, Any]) -> dict[str, Any]:
    src = block.get("source") or {}
    if not isinstance(src, dict):
        raise bad_param("messages", "content block source must be an object.")
    return src


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    src = _source(block)
    kind = src.get("type")
    if kind == "base64":
        media_type = need_str(src.get("media_type", ""), "messages", "image media_type")
        url = f"data:{media_type};base64,{need_str(src.get('data', ''), 'messages', 'image data')}"
    elif kind == "url":
        url = need_str(src.get("url", ""), "messages", "image url")
    else:
        raise bad_param("messages", f"image source type {kind!r} is not supported upstream.")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict[str, Any]) -> dict[str, Any]:
    src = _source(block)
    kind = src.get("type")
    if kind == "text":
        return {"type": "text", "text": need_str(src.get("data", ""), "messages", "document data")}
    if kind == "base64" and src.get("media_type") == "application/pdf":
        name = need_str(block.get("title") or "document.pdf", "messages", "document title")
        data = need_str(src.get("data", ""), "messages", "document data")
        return {"type": "file", "file": {"filename": name, "file_data": f"data:application/pdf;base64,{data}"}}
    raise bad_param("messages", f"document source type {kind!r} is not supported upstream.")


def _tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind != "text":
                raise bad_param("messages", f"tool_result content of type {kind!r} is not supported upstream.")
            parts.append(need_str(item.get("text", ""), "messages", "tool_result text"))
        text = "".join(parts)
    else:
        raise bad_param("messages", "tool_result content must be a string or a list of text blocks.")
    return "Error: " + text if block.get("is_error") else text


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        texts = []
        for block in system:
            if not isinstance(block, dict) or block.get("type") != "text":
                raise bad_param("system", "system blocks must be text blocks.")
            texts.append(need_str(block.get("text", ""), "system", "system text"))
        return "\n\n".join(texts)
    raise bad_param("system", "system must be a string or a list of text blocks.")


def _user(content: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            if parts:  # keep order: content before a tool result goes first
                out.append({"role": "user", "content": parts})
                parts = []
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": need_str(block.get("tool_use_id", ""), "messages", "tool_use_id"),
                    "content": _tool_result_text(block),
                }
            )
        elif kind == "text":
            parts.append({"type": "text", "text": need_str(block.get("text", ""), "messages", "text")})
        elif kind == "image":
            parts.append(_image_part(block))
        elif kind == "document":
            parts.append(_document_part(block))
        else:
            raise bad_param("messages", f"user content block type {kind!r} is not supported upstream.")
    if parts:
        out.append({"role": "user", "content": parts})


def _assistant(content: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(need_str(block.get("text", ""), "messages", "text"))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": need_str(block.get("id", ""), "messages", "tool_use id"),
                    "type": "function",
                    "function": {
                        "name": need_str(block.get("name", ""), "messages", "tool_use name"),
                        "arguments": dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # previous-turn thinking: Chat Completions has no input form (documented)
        else:
            raise bad_param("messages", f"assistant content block type {kind!r} is not supported upstream.")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    if texts or calls:
        out.append(msg)


def openai_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if body.get("system") is not None:
        out.append({"role": "system", "content": _system_text(body["system"])})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_param("messages", "messages must be a non-empty list.")
    for msg in messages:
        role = msg.get("role") if isinstance(msg, dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str | list):
            raise bad_param("messages", "message content must be a string or a list of blocks.")
        if role == "user":
            _user(content, out)
        elif role == "assistant":
            _assistant(content, out)
        elif role == "system":
            out.append({"role": "system", "content": _system_text(content)})
        else:
            raise bad_param("messages", f"message role {role!r} is not supported.")
    return out


def openai_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad_param("tools", "tools must be a list.")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad_param("tools", f"tool type {kind!r} (a server tool) is not supported upstream.")
        fn: dict[str, Any] = {"name": need_str(tool.get("name", ""), "tools", "tool name")}
        if tool.get("description"):
            fn["description"] = need_str(tool["description"], "tools", "tool description")
        schema = tool.get("input_schema") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict):
            raise bad_param("tools", "tool input_schema must be an object.")
        fn["parameters"] = schema
        if tool.get("strict"):
            fn["strict"] = True
        out.append({"type": "function", "function": fn})
    return out


def openai_tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        raise bad_param("tool_choice", "tool_choice must be an object.")
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": need_str(choice.get("name", ""), "tool_choice", "name")}}
    raise bad_param("tool_choice", f"tool_choice type {kind!r} is not supported upstream.")

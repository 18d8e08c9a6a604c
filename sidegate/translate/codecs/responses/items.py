"""Responses input items <-> the form's messages (the body of the request codec).

Decoding merges consecutive assistant items (text, reasoning, function calls) into one assistant
message and consecutive ``function_call_output`` items into one user message: Chat Completions
needs a turn's tool calls in one assistant message followed by their tool messages, and Anthropic
merges same-role turns anyway.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.translate.codecs.form import (
    Document,
    Image,
    Message,
    Part,
    Text,
    Thinking,
    ToolCall,
    ToolResult,
)
from sidegate.translate.common import as_dict, as_list, as_str, bad_param, dumps, need_str

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _data_url(url: str, what: str) -> tuple[str, str]:
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise bad_param("input", f"{what} must be a base64 data URL.")
    return head[5:-7], data


def _image(part: dict[str, Any]) -> Image:
    url = part.get("image_url")
    if not isinstance(url, str):
        raise bad_param("input", "input_image needs an image_url (file_id needs OpenAI's file store).")
    if url.startswith("data:"):
        media_type, data = _data_url(url, "input_image image_url")
        if media_type not in _IMAGE_TYPES:
            raise bad_param("input", f"image type {media_type!r} is not supported (jpeg, png, gif, webp).")
        return Image(media_type=media_type, data=data)
    if url.startswith(("https://", "http://")):
        return Image(url=url)
    raise bad_param("input", "input_image image_url must be an https URL or a base64 data URL.")


def _file(part: dict[str, Any]) -> Document:
    data = part.get("file_data")
    if not isinstance(data, str):
        raise bad_param("input", "input_file needs file_data (file_id and file_url are not supported here).")
    if not data.startswith("data:"):  # OpenAI also accepts bare base64 and reads it as a PDF
        data = "data:application/pdf;base64," + data
    media_type, payload = _data_url(data, "input_file file_data")
    if media_type != "application/pdf":
        raise bad_param("input", f"file type {media_type!r} is not supported for this model (PDF only).")
    title = part.get("filename")
    return Document(media_type, payload, title=title if isinstance(title, str) and title else None)


def _parts(content: list[Any], role: str) -> list[Part]:
    parts: list[Part] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            parts.append(Text(need_str(part.get("text", ""), "input", "text")))  # type: ignore[union-attr]
        elif kind == "refusal" and role == "assistant":
            parts.append(Text(need_str(part.get("refusal", ""), "input", "refusal")))  # type: ignore[union-attr]
        elif kind == "input_image" and role == "user":
            parts.append(_image(part))  # type: ignore[arg-type]
        elif kind == "input_file" and role == "user":
            parts.append(_file(part))  # type: ignore[arg-type]
        else:
            raise bad_param("input", f"{role} content part type {kind!r} is not supported for this model.")
    return parts


def _system(content: Any) -> str | list[Part]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_param("input", "system content must be a string or a list of input_text parts.")
    out: list[Part] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "input_text":
            raise bad_param("input", "system and developer content must be text.")
        out.append(Text(need_str(part.get("text", ""), "input", "text")))
    return out


def _tool_call(item: dict[str, Any]) -> ToolCall:
    call_id = need_str(item.get("call_id"), "input", "function_call call_id")
    name = need_str(item.get("name"), "input", "function_call name")
    args = need_str(item.get("arguments", "{}"), "input", "function_call arguments") or "{}"
    try:
        parsed = orjson.loads(args)
    except orjson.JSONDecodeError:
        raise bad_param("input", f"function_call {call_id!r} arguments are not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise bad_param("input", f"function_call {call_id!r} arguments must be a JSON object.")
    return ToolCall(call_id, name, parsed, args)


def _tool_result(item: dict[str, Any]) -> ToolResult:
    call_id = need_str(item.get("call_id"), "input", "function_call_output call_id")
    output = item.get("output")
    if isinstance(output, str):
        return ToolResult(call_id, output)
    if not isinstance(output, list):
        raise bad_param("input", "function_call_output output must be a string or a list of parts.")
    texts = []
    for part in output:
        if not isinstance(part, dict) or part.get("type") != "input_text":
            kind = part.get("type") if isinstance(part, dict) else None
            raise bad_param("input", f"function_call_output part type {kind!r} is not supported (text only).")
        texts.append(need_str(part.get("text", ""), "input", "text"))
    return ToolResult(call_id, "".join(texts))


def _thinking(item: dict[str, Any]) -> Thinking | None:
    """A reasoning item the gateway produced carries the provider's signature in
    ``encrypted_content`` (Anthropic needs it back with thinking + tool use); one without it
    cannot be sent to any provider as input and is dropped (a provider ignores or re-derives it)."""
    signature = item.get("encrypted_content")
    if not isinstance(signature, str) or not signature:
        return None
    texts = [as_str(as_dict(p).get("text")) for p in as_list(item.get("content"))]
    if not any(texts):
        texts = [as_str(as_dict(p).get("text")) for p in as_list(item.get("summary"))]
    return Thinking("".join(texts), signature)


def _push(out: list[Message], role: str, part: Part) -> None:
    """Append to the previous message of ``role`` (a user message only when it holds tool
    results: a client's own text before a tool output stays a turn of its own, in its place)."""
    last = out[-1] if out else None
    if (
        last is not None
        and last.role == role
        and isinstance(last.content, list)
        and (role == "assistant" or (last.content and type(last.content[-1]) is ToolResult))
    ):
        last.content.append(part)
    else:
        out.append(Message(role, [part]))


def decode_input(value: Any) -> list[Message]:
    """``input`` (a string or a list of items) -> form messages."""
    if isinstance(value, str):
        return [Message("user", value)]
    if not isinstance(value, list) or not value:
        raise bad_param("input", "input must be a string or a non-empty list of items.")
    out: list[Message] = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_param("input", "each input item must be an object.")
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item.get("role"), item.get("content")
            if role in ("system", "developer"):
                out.append(Message("system", _system(content)))
            elif role not in ("user", "assistant"):
                raise bad_param("input", f"message role {role!r} is not supported.")
            elif isinstance(content, str):
                if role == "user":
                    out.append(Message("user", content))
                elif content:
                    _push(out, "assistant", Text(content))
            elif isinstance(content, list):
                parts = _parts(content, role)
                if role == "user":
                    out.append(Message("user", parts))
                else:
                    for part in parts:
                        _push(out, "assistant", part)
            else:
                raise bad_param("input", "message content must be a string or a list of parts.")
        elif kind == "function_call":
            _push(out, "assistant", _tool_call(item))
        elif kind == "function_call_output":
            _push(out, "user", _tool_result(item))
        elif kind == "reasoning":
            thinking = _thinking(item)
            if thinking is not None:
                _push(out, "assistant", thinking)
        elif kind == "item_reference":
            raise bad_param("input", "item_reference needs OpenAI's stored items; send the items themselves.")
        else:
            raise bad_param(
                "input", f"Input item type {kind!r} belongs to a built-in tool that this model cannot run."
            )
    if not any(m.role != "system" for m in out):
        raise bad_param("input", "input must contain at least one user or assistant item.")
    return out


# ------------------------------------------------------------------------------------- encode


def _input_part(part: Part) -> dict[str, Any]:
    if type(part) is Text:
        return {"type": "input_text", "text": part.text}
    if type(part) is Image:
        url = part.url or f"data:{part.media_type};base64,{part.data}"
        return {"type": "input_image", "image_url": url, "detail": "auto"}
    if type(part) is Document:
        if part.text is not None:
            return {"type": "input_text", "text": part.text}
        return {
            "type": "input_file",
            "filename": part.title or "document.pdf",
            "file_data": f"data:application/pdf;base64,{part.data}",
        }
    raise bad_param("messages", f"content part {type(part).__name__} is not supported upstream.")


def _assistant(content: list[Part], out: list[dict[str, Any]]) -> None:
    """Text parts -> one assistant message (before the calls, as a model writes them); tool calls
    -> function_call items; thinking dropped (a reasoning input item needs OpenAI's own item id)."""
    texts = [p.text for p in content if type(p) is Text]
    if texts:
        out.append({"type": "message", "role": "assistant", "content": "".join(texts)})
    for p in content:
        if type(p) is ToolCall:
            args = p.raw if p.raw is not None else dumps(p.input).decode()
            out.append({"type": "function_call", "call_id": p.id, "name": p.name, "arguments": args})


def encode_input(messages: list[Message]) -> list[dict[str, Any]]:
    """Form messages -> Responses input items (system messages stay in place as system items)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        content = msg.content
        if msg.role == "system":
            text = content if isinstance(content, str) else "\n\n".join(p.text for p in content)  # type: ignore[union-attr]
            out.append({"type": "message", "role": "system", "content": text})
        elif isinstance(content, str):
            out.append({"type": "message", "role": msg.role, "content": content})
        elif msg.role == "assistant":
            _assistant(content, out)
        else:
            parts: list[dict[str, Any]] = []
            for part in content:
                if type(part) is ToolResult:
                    if parts:  # keep order: content before a tool result goes first
                        out.append({"type": "message", "role": "user", "content": parts})
                        parts = []
                    text = "Error: " + part.text if part.is_error else part.text
                    out.append({"type": "function_call_output", "call_id": part.call_id, "output": text})
                else:
                    parts.append(_input_part(part))
            if parts:
                out.append({"type": "message", "role": "user", "content": parts})
    return out

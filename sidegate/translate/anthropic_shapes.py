"""Anthropic Messages shapes built from OpenAI Chat Completions parts (system/messages, content
blocks, tools, tool_choice, structured output, and which OpenAI parameters have a Messages form): what every pair with an OpenAI chat client and an
Anthropic provider needs to say a conversation in Messages form. Mapping table: docs/translation.md.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.translate.common import as_dict, bad_param, need_str

__all__ = [
    "anthropic_messages",
    "anthropic_output_config",
    "anthropic_tool_choice",
    "anthropic_tools",
    "check_openai_params",
]

# Parameters that do not change what the model generates: accepted and not forwarded.
_HARMLESS = frozenset(
    {
        "model",
        "messages",
        "store",
        "metadata",
        "stream_options",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
    }
)
# Parameters refused unless they hold their no-op value.
_NOOP_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "seed": (None,),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "moderation": (None,),
    "verbosity": (None, "medium"),
    "service_tier": (None, "auto", "default"),
    "functions": (None, []),
    "function_call": (None,),
}
_MAPPED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "user",
        "safety_identifier",
        "stream",
    }
)

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _text_of(content: Any, where: str) -> str:
    """Text of a system/developer/tool content (string or text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_param("messages", f"{where} content part type {kind!r} is not supported upstream.")
            parts.append(need_str(part.get("text", ""), "messages", f"{where} text"))
        return "".join(parts)
    if content is None:
        return ""
    raise bad_param("messages", f"{where} content must be a string or a list of text parts.")


def _data_url(url: str, where: str) -> tuple[str, str]:
    """(media_type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise bad_param("messages", f"{where}: only base64 data URLs are supported.")
    return head[5:-7].lower(), data


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_param("messages", "image_url part without a url.")
    if url.startswith("data:"):
        media_type, data = _data_url(url, "image_url")
        if media_type not in _IMAGE_TYPES:
            raise bad_param("messages", f"image type {media_type!r} is not supported (jpeg, png, gif, webp).")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_param("messages", "image_url must be an https URL or a base64 data URL.")


def _file_block(part: dict[str, Any]) -> dict[str, Any]:
    file = part.get("file")
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str):
        raise bad_param("messages", "file parts must carry file_data (file_id cannot be resolved upstream).")
    if not data_url.startswith("data:"):  # OpenAI also accepts bare base64: assume PDF as it does
        data_url = "data:application/pdf;base64," + data_url
    media_type, data = _data_url(data_url, "file")
    if media_type != "application/pdf":
        raise bad_param("messages", f"file type {media_type!r} is not supported upstream (PDF only).")
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _user_blocks(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_param("messages", "user content must be a string or a list of content parts.")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": need_str(part.get("text", ""), "messages", "text")})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        elif kind == "file":
            blocks.append(_file_block(part))
        else:
            raise bad_param("messages", f"user content part type {kind!r} is not supported upstream.")
    return blocks


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    if msg.get("audio") is not None:
        raise bad_param("messages", "assistant audio cannot be sent upstream.")
    if msg.get("function_call") is not None:
        raise bad_param("messages", "assistant function_call is deprecated; use tool_calls.")
    blocks: list[dict[str, Any]] = []
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                blocks.append({"type": "text", "text": need_str(part.get("text", ""), "messages", "text")})
            elif kind == "refusal":
                refusal = need_str(part.get("refusal", ""), "messages", "refusal")
                blocks.append({"type": "text", "text": refusal})
            else:
                raise bad_param(
                    "messages", f"assistant content part type {kind!r} is not supported upstream."
                )
    elif content is not None:
        raise bad_param("messages", "assistant content must be a string or a list of parts.")
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_param("messages", "assistant tool_calls must be a list.")
    for call in calls:
        if not isinstance(call, dict):
            raise bad_param("messages", "each assistant tool call must be an object.")
        if call.get("type", "function") != "function":
            raise bad_param("messages", f"tool call type {call.get('type')!r} is not supported upstream.")
        fn = call.get("function") or {}
        if not isinstance(fn, dict):
            raise bad_param("messages", "tool call function must be an object.")
        call_id = need_str(call.get("id", ""), "messages", "tool call id")
        name = need_str(fn.get("name", ""), "messages", "tool call function name")
        args = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(args)
        except orjson.JSONDecodeError:
            raise bad_param(
                "messages", f"tool call {call.get('id')!r} arguments are not valid JSON."
            ) from None
        if not isinstance(parsed, dict):
            raise bad_param("messages", f"tool call {call.get('id')!r} arguments must be a JSON object.")
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": parsed})
    return blocks


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str):
        raise bad_param("messages", "tool message without tool_call_id.")
    return {"type": "tool_result", "tool_use_id": call_id, "content": _text_of(msg.get("content"), "tool")}


def anthropic_messages(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages) with adjacent same-role turns merged."""
    if not isinstance(messages, list) or not messages:
        raise bad_param("messages", "messages must be a non-empty list.")
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def push(role: str, content: str | list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            prev = out[-1]["content"]
            if isinstance(prev, str):
                prev = [{"type": "text", "text": prev}]
            add = [{"type": "text", "text": content}] if isinstance(content, str) else content
            out[-1]["content"] = prev + add
        else:
            out.append({"role": role, "content": content})

    for msg in messages:
        if not isinstance(msg, dict):
            raise bad_param("messages", "each message must be an object.")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content"), role))
        elif role == "user":
            push("user", _user_blocks(msg.get("content")))
        elif role == "assistant":
            blocks = _assistant_blocks(msg)
            if blocks:
                push("assistant", blocks)
        elif role == "tool":
            push("user", [_tool_result(msg)])
        else:
            raise bad_param("messages", f"message role {role!r} is not supported upstream.")
    return system, out


def _schema(schema: Any) -> dict[str, Any]:
    """Function ``parameters`` -> Anthropic ``input_schema`` (an object schema, as both APIs require)."""
    if schema is None or schema == {}:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise bad_param("tools", "function parameters must be a JSON Schema of type 'object'.")
    return schema if "type" in schema else {"type": "object", **schema}


def anthropic_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad_param("tools", "tools must be a list.")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad_param("tools", f"tool type {kind!r} is not supported upstream (function tools only).")
        fn = tool.get("function") or {}
        if not isinstance(fn, dict):
            raise bad_param("tools", "tool function must be an object.")
        entry: dict[str, Any] = {"name": need_str(fn.get("name", ""), "tools", "function name")}
        if fn.get("description"):
            entry["description"] = need_str(fn["description"], "tools", "function description")
        entry["input_schema"] = _schema(fn.get("parameters"))
        if fn.get("strict"):
            entry["strict"] = True
        out.append(entry)
    return out


def anthropic_tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = as_dict(choice.get("function")).get("name")
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    raise bad_param("tool_choice", f"tool_choice {choice!r} is not supported upstream.")


def anthropic_output_config(fmt: Any) -> dict[str, Any] | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_schema":
        schema = as_dict(fmt.get("json_schema")).get("schema")
        if not isinstance(schema, dict):
            raise bad_param("response_format", "response_format json_schema needs a schema object.")
        return {"format": {"type": "json_schema", "schema": schema}}
    if kind == "json_object":
        raise bad_param(
            "response_format",
            "response_format json_object has no upstream equivalent; use json_schema with a schema.",
        )
    raise bad_param("response_format", f"response_format type {kind!r} is not supported upstream.")


def check_openai_params(body: dict[str, Any]) -> None:
    """Every OpenAI parameter is mapped, harmless, or at its no-op value; else a 400 naming it."""
    for key, value in body.items():
        if key in _MAPPED or key in _HARMLESS:
            continue
        allowed = _NOOP_VALUES.get(key)
        if allowed is None:
            raise bad_param(key, f"Parameter {key!r} is not supported for this model.")
        if value not in allowed:
            raise bad_param(
                key, f"Parameter {key!r} is not supported for this model (only its default value is)."
            )

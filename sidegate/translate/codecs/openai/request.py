"""OpenAI Chat Completions requests <-> the canonical form (client decode, provider encode)."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.translate.base import ProviderRequest, TranslateOptions
from sidegate.translate.codecs.form import (
    Document,
    Image,
    Message,
    Part,
    Request,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from sidegate.translate.codecs.openai.params import (
    MAPPED,
    check_extras,
    decode_file,
    decode_image_url,
    response_schema,
    text_of,
    tool_choice,
)
from sidegate.translate.codecs.openai.response import openai_tool_calls
from sidegate.translate.codecs.util import check_sampling, effort_for_budget
from sidegate.translate.common import as_dict, bad_param, dumps, is_int, need_str

# Request keys the form has fields for; every other key goes to Request.extras by its OpenAI name.
_FIELDS = MAPPED | {"model", "messages"}


# ------------------------------------------------------------------------------- request decode


def _user(content: Any) -> str | list[Part]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_param("messages", "user content must be a string or a list of content parts.")
    parts: list[Part] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(Text(need_str(part.get("text", ""), "messages", "text")))
        elif kind == "image_url":
            parts.append(decode_image_url(part))
        elif kind == "file":
            parts.append(decode_file(part))
        else:
            raise bad_param("messages", f"user content part type {kind!r} is not supported upstream.")
    return parts


def _assistant(msg: dict[str, Any]) -> list[Part]:
    if msg.get("audio") is not None or msg.get("function_call") is not None:
        raise bad_param("messages", "assistant audio / function_call cannot be sent upstream.")
    parts: list[Part] = []
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            parts.append(Text(content))
    elif isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append(Text(need_str(part.get("text", ""), "messages", "text")))
            elif kind == "refusal":
                parts.append(Text(need_str(part.get("refusal", ""), "messages", "refusal")))
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
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise bad_param("messages", "each assistant tool call must be a function call object.")
        fn = call.get("function") or {}
        if not isinstance(fn, dict):
            raise bad_param("messages", "tool call function must be an object.")
        call_id = need_str(call.get("id", ""), "messages", "tool call id")
        name = need_str(fn.get("name", ""), "messages", "tool call function name")
        args = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(args)
        except orjson.JSONDecodeError:
            raise bad_param("messages", f"tool call {call_id!r} arguments are not valid JSON.") from None
        if not isinstance(parsed, dict):
            raise bad_param("messages", f"tool call {call_id!r} arguments must be a JSON object.")
        parts.append(ToolCall(call_id, name, parsed, args))
    return parts


def _messages(messages: Any) -> list[Message]:
    if not isinstance(messages, list) or not messages:
        raise bad_param("messages", "messages must be a non-empty list.")
    out: list[Message] = []
    for msg in messages:
        if not isinstance(msg, dict):
            raise bad_param("messages", "each message must be an object.")
        role = msg.get("role")
        if role == "user":
            out.append(Message("user", _user(msg.get("content"))))
        elif role == "assistant":
            out.append(Message("assistant", _assistant(msg)))
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str):
                raise bad_param("messages", "tool message without tool_call_id.")
            out.append(Message("user", [ToolResult(call_id, text_of(msg.get("content"), "tool"))]))
        elif role in ("system", "developer"):
            out.append(Message("system", text_of(msg.get("content"), role)))
        else:
            raise bad_param("messages", f"message role {role!r} is not supported upstream.")
    return out


def _tools(tools: Any) -> list[Tool]:
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
        name = need_str(fn.get("name", ""), "tools", "function name")
        desc = need_str(fn["description"], "tools", "function description") if fn.get("description") else None
        out.append(Tool(name, desc, fn.get("parameters"), bool(fn.get("strict"))))
    return out


def decode_request(body: dict[str, Any]) -> Request:
    """OpenAI client body -> Request (validation that depends on no provider happens here)."""
    extras = {k: v for k, v in body.items() if k not in _FIELDS}
    req = Request(Api.OPENAI, _messages(body.get("messages")), check_extras, extras=extras)
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
        req.max_tokens_param = "max_tokens"
    else:
        req.max_tokens_param = "max_completion_tokens"
    if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
        raise bad_param("max_completion_tokens", "max_completion_tokens must be a positive integer.")
    req.max_tokens = max_tokens
    effort = body.get("reasoning_effort")
    if effort is not None and effort != "none":
        req.reasoning_effort = need_str(effort, "reasoning_effort", "reasoning_effort")
    stop = body.get("stop")
    if isinstance(stop, str):
        req.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        req.stop = stop
    elif stop is not None:
        raise bad_param("stop", "stop must be a string or a list of strings.")
    sampling: dict[str, Any] = {}
    check_sampling(body, sampling)
    req.temperature, req.top_p, req.top_k = (
        sampling.get("temperature"),
        sampling.get("top_p"),
        sampling.get("top_k"),
    )
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools:
        req.tools = _tools(tools)
        no_parallel = body.get("parallel_tool_calls") is False
        if choice is not None:
            req.tool_choice = tool_choice(choice)
            req.tool_choice.disable_parallel = no_parallel
        elif no_parallel:
            req.tool_choice = ToolChoice("auto", explicit=False, disable_parallel=True)
    elif choice not in (None, "none", "auto"):
        raise bad_param("tool_choice", "tool_choice requires tools.")
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        req.response_schema = response_schema(fmt)
    elif fmt is not None and kind != "text":
        req.extras["response_format"] = fmt  # json_object and the rest: the provider codec decides
    user = body.get("safety_identifier") or body.get("user")
    if user:
        req.user = need_str(user, "user", "user")
    req.stream = bool(body.get("stream"))
    return req


# ------------------------------------------------------------------------------- request encode


def _part(part: Part) -> dict[str, Any]:
    if type(part) is Text:
        return {"type": "text", "text": part.text}
    if type(part) is Image:
        url = part.url or f"data:{part.media_type};base64,{part.data}"
        return {"type": "image_url", "image_url": {"url": url}}
    if type(part) is Document:
        if part.text is not None:
            return {"type": "text", "text": part.text}
        name = part.title or "document.pdf"
        return {
            "type": "file",
            "file": {"filename": name, "file_data": f"data:application/pdf;base64,{part.data}"},
        }
    raise bad_param("messages", f"content part {type(part).__name__} is not supported upstream.")


def _encode_message(msg: Message, out: list[dict[str, Any]]) -> None:
    content = msg.content
    if isinstance(content, str):
        out.append({"role": msg.role, "content": content})
    elif msg.role == "system":
        out.append({"role": "system", "content": "\n\n".join(p.text for p in content)})  # type: ignore[union-attr]
    elif msg.role == "user":
        parts: list[dict[str, Any]] = []
        for part in content:
            if type(part) is ToolResult:
                if parts:  # keep order: content before a tool result goes first
                    out.append({"role": "user", "content": parts})
                    parts = []
                text = "Error: " + part.text if part.is_error else part.text
                out.append({"role": "tool", "tool_call_id": part.call_id, "content": text})
            else:
                parts.append(_part(part))
        if parts:
            out.append({"role": "user", "content": parts})
    else:
        texts = [p.text for p in content if type(p) is Text]  # type: ignore[union-attr]
        calls = openai_tool_calls(content)  # type: ignore[arg-type]
        if texts or calls:
            entry: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)


def _extras(req: Request, out: dict[str, Any]) -> None:
    if req.source is not Api.OPENAI:
        req.check_extras(req.extras)
        return
    for key, value in req.extras.items():  # same API: what the form did not model goes through as sent
        if key != "stream_options" or value:
            out[key] = value


def encode_request(req: Request, model: str, opts: TranslateOptions) -> ProviderRequest:
    """The form -> a chat completion request. A streamed one asks for usage (the gateway meters
    every answer; the client's stream carries it only if the client asked), always for a client of
    another API, which always gets usage, and for OpenAI clients per ``opts.force_upstream_usage``."""
    messages: list[dict[str, Any]] = []
    for msg in req.messages:
        _encode_message(msg, messages)
    out: dict[str, Any] = {"model": model, "messages": messages}
    _extras(req, out)
    if req.max_tokens is not None:
        out["max_completion_tokens"] = req.max_tokens
    for key, value in (("temperature", req.temperature), ("top_p", req.top_p), ("top_k", req.top_k)):
        if value is not None:
            out[key] = value
    if req.stop:
        out["stop"] = list(req.stop)
    if req.tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.schema or {"type": "object", "properties": {}},
                    **({"strict": True} if t.strict else {}),
                },
            }
            for t in req.tools
        ]
        tc = req.tool_choice
        if tc is not None and tc.explicit:
            out["tool_choice"] = (
                {"type": "function", "function": {"name": tc.name}}
                if tc.kind == "tool"
                else {"any": "required"}.get(tc.kind, tc.kind)
            )
        if tc is not None and tc.disable_parallel:
            out["parallel_tool_calls"] = False
    if req.thinking_budget is not None:
        if not opts.reasoning_budgets:
            raise bad_param("thinking", "thinking is not enabled on this route.")
        out["reasoning_effort"] = effort_for_budget(req.thinking_budget, opts.reasoning_budgets)
    if req.reasoning_effort:
        out["reasoning_effort"] = req.reasoning_effort
    if req.response_schema is not None:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": req.response_schema, "strict": True},
        }
    if req.user:
        out["user"] = req.user
    if req.stream:
        out["stream"] = True
        if req.source is not Api.OPENAI or opts.force_upstream_usage:
            out["stream_options"] = {**as_dict(out.get("stream_options")), "include_usage": True}
    return ProviderRequest("/v1/chat/completions", dumps(out), {})

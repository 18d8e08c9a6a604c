"""Anthropic Messages requests <-> the canonical form (client decode, provider encode)."""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api
from sidegate.translate.base import ProviderRequest, TranslateOptions
from sidegate.translate.codecs.anthropic.params import (
    MAPPED,
    check_extras,
    source,
    tool_choice,
    tool_result_text,
    tools,
)
from sidegate.translate.codecs.anthropic.response import content_block
from sidegate.translate.codecs.form import (
    Document,
    Image,
    Message,
    Part,
    Request,
    Text,
    Thinking,
    ToolCall,
    ToolResult,
)
from sidegate.translate.codecs.util import check_sampling
from sidegate.translate.common import as_dict, as_str, bad_param, dumps, is_int, need_str

# Request keys the form has fields for; every other key goes to Request.extras by its Anthropic
# name, where the provider codec applies ``params.check_extras`` (dropped, refused).
_FIELDS = MAPPED
_NO_SAMPLING_VERSION = "2026-10-21"


# ------------------------------------------------------------------------------- request decode


def decode_image(block: dict[str, Any]) -> Image:
    """An ``image`` block (base64 or URL source)."""
    src = source(block)
    kind = src.get("type")
    if kind == "base64":
        media_type = need_str(src.get("media_type", ""), "messages", "image media_type")
        return Image(media_type=media_type, data=need_str(src.get("data", ""), "messages", "image data"))
    if kind == "url":
        return Image(url=need_str(src.get("url", ""), "messages", "image url"))
    raise bad_param("messages", f"image source type {kind!r} is not supported upstream.")


def decode_document(block: dict[str, Any]) -> Document:
    """A ``document`` block: plain text, or a base64 PDF (the sources other APIs can take)."""
    src = source(block)
    kind = src.get("type")
    if kind == "text":
        return Document(text=need_str(src.get("data", ""), "messages", "document data"))
    if kind == "base64" and src.get("media_type") == "application/pdf":
        title = need_str(block["title"], "messages", "document title") if block.get("title") else None
        return Document(
            "application/pdf", need_str(src.get("data", ""), "messages", "document data"), title=title
        )
    raise bad_param("messages", f"document source type {kind!r} is not supported upstream.")


def _tool_result(block: dict[str, Any]) -> ToolResult:
    is_error = bool(block.get("is_error"))
    text = tool_result_text(block)
    call_id = need_str(block.get("tool_use_id", ""), "messages", "tool_use_id")
    return ToolResult(call_id, text, is_error)


def _system(system: Any, param: str) -> str | list[Part]:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        out: list[Part] = []
        for block in system:
            if not isinstance(block, dict) or block.get("type") != "text":
                raise bad_param(param, "system blocks must be text blocks.")
            out.append(Text(need_str(block.get("text", ""), param, "system text")))
        return out
    raise bad_param(param, "system must be a string or a list of text blocks.")


def _blocks(role: str, content: list[Any]) -> list[Part]:
    parts: list[Part] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(Text(need_str(block.get("text", ""), "messages", "text")))
        elif role == "user" and kind == "tool_result":
            parts.append(_tool_result(block))
        elif role == "user" and kind == "image":
            parts.append(decode_image(block))
        elif role == "user" and kind == "document":
            parts.append(decode_document(block))
        elif role == "assistant" and kind == "tool_use":
            call_id = need_str(block.get("id", ""), "messages", "tool_use id")
            name = need_str(block.get("name", ""), "messages", "tool_use name")
            parts.append(ToolCall(call_id, name, block.get("input") or {}))
        elif role == "assistant" and kind == "thinking":
            parts.append(Thinking(as_str(block.get("thinking")), as_str(block.get("signature"))))
        elif role == "assistant" and kind == "redacted_thinking":
            continue  # the form has no place for it (a documented loss)
        else:
            raise bad_param("messages", f"{role} content block type {kind!r} is not supported upstream.")
    return parts


def _system_turn(msg: dict[str, Any], content: Any, later_user: bool, req: Request) -> Message | None:
    """A ``system`` turn inside ``messages`` (beta): a system message in place, or nothing when its
    ``clear_at: next_user_message`` says the model no longer sees it (then its per-turn settings
    served an earlier reply too). A visible turn's ``output_config.effort`` is the effort in force
    from there on (the last one wins)."""
    if isinstance(content, list):
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in ("tool_addition", "tool_removal"):  # the tool set changes mid-conversation
                raise bad_param("messages", f"system message block type {kind!r} is not supported upstream.")
    text = _system(content, "messages")
    config = msg.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise bad_param("messages", "a system message's output_config must be an object.")
    if msg.get("clear_at") == "next_user_message" and later_user:
        return None
    if config and config.get("effort"):
        req.reasoning_effort = need_str(config["effort"], "messages", "output_config.effort")
    return Message("system", text)


def _messages(body: dict[str, Any], req: Request) -> list[Message]:
    out: list[Message] = []
    if body.get("system") is not None:
        out.append(Message("system", _system(body["system"], "system")))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_param("messages", "messages must be a non-empty list.")
    last_user = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), default=-1
    )
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str | list):
            raise bad_param("messages", "message content must be a string or a list of blocks.")
        if role == "system":
            turn = _system_turn(msg, content, i < last_user, req)
            if turn is not None:
                out.append(turn)
        elif role in ("user", "assistant"):
            out.append(Message(role, content if isinstance(content, str) else _blocks(role, content)))
        else:
            raise bad_param("messages", f"message role {role!r} is not supported.")
    return out


def decode_request(body: dict[str, Any]) -> Request:
    """Anthropic client body -> Request. Validation that depends on no provider happens here; what
    the form has no field for goes to ``extras`` for the provider codec (``params.check_extras``)."""
    extras = {k: v for k, v in body.items() if k not in _FIELDS}
    req = Request(Api.ANTHROPIC, [], check_extras, extras=extras)
    output_config = body.get("output_config") or {}
    if not isinstance(output_config, dict):
        raise bad_param("output_config", "output_config must be an object.")
    if output_config.get("effort"):
        req.reasoning_effort = need_str(output_config["effort"], "output_config", "output_config.effort")
    req.messages = _messages(body, req)  # after the top-level effort: a system turn's effort wins
    max_tokens = body.get("max_tokens")
    if not is_int(max_tokens) or max_tokens < 1:
        raise bad_param("max_tokens", "max_tokens is required and must be a positive integer.")
    req.max_tokens = max_tokens
    sampling: dict[str, Any] = {}
    check_sampling(body, sampling)
    req.temperature, req.top_p, req.top_k = (
        sampling.get("temperature"),
        sampling.get("top_p"),
        sampling.get("top_k"),
    )
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad_param("stop_sequences", "stop_sequences must be a list of strings.")
    req.stop = stop
    tool_list, choice = body.get("tools"), body.get("tool_choice")
    if tool_list:
        req.tools = tools(tool_list)
        if choice is not None:
            req.tool_choice = tool_choice(choice)
    elif choice is not None and as_dict(choice).get("type") not in ("auto", "none"):
        raise bad_param("tool_choice", "tool_choice requires tools.")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens") or 0
        if not is_int(budget):
            raise bad_param("thinking", "thinking.budget_tokens must be an integer.")
        req.thinking_budget = budget
    elif thinking is not None and as_dict(thinking).get("type") not in (
        "disabled",
        "adaptive",
        "between_tools",
    ):
        raise bad_param("thinking", "thinking must be enabled, adaptive or disabled.")
    fmt = output_config.get("format")
    if fmt:
        if (
            not isinstance(fmt, dict)
            or fmt.get("type") != "json_schema"
            or not isinstance(fmt.get("schema"), dict)
        ):
            raise bad_param("output_config", "output_config.format must be a json_schema with a schema.")
        req.response_schema = fmt["schema"]
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad_param("metadata", "metadata must be an object.")
    if metadata.get("user_id"):
        req.user = need_str(metadata["user_id"], "metadata", "metadata.user_id")
    req.stream = bool(body.get("stream"))
    return req


# ------------------------------------------------------------------------------- request encode


def _encode_messages(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic turns); adjacent same-role turns merge, as the API requires."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for msg in messages:
        content = msg.content
        if msg.role == "system":
            if isinstance(content, str):
                system.append(content)
            else:
                system.extend(p.text for p in content)  # type: ignore[union-attr]
            continue
        add: str | list[dict[str, Any]] = (
            content if isinstance(content, str) else [content_block(p) for p in content]
        )
        if not add and msg.role == "assistant":
            continue
        if out and out[-1]["role"] == msg.role:
            prev = out[-1]["content"]
            if isinstance(prev, str):
                prev = [{"type": "text", "text": prev}]
            out[-1]["content"] = prev + ([{"type": "text", "text": add}] if isinstance(add, str) else add)
        else:
            out.append({"role": msg.role, "content": add})
    return system, out


def _input_schema(schema: Any) -> dict[str, Any]:
    """Function ``parameters`` -> Anthropic ``input_schema`` (an object schema, as both APIs require)."""
    if schema is None or schema == {}:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise bad_param("tools", "function parameters must be a JSON Schema of type 'object'.")
    return schema if "type" in schema else {"type": "object", **schema}


def _thinking(req: Request, opts: TranslateOptions) -> tuple[int, dict[str, Any] | None]:
    """(max_tokens, thinking): OpenAI's effort becomes a budget that max_tokens must leave room for."""
    explicit = req.max_tokens is not None
    max_tokens = req.max_tokens if explicit else opts.default_max_tokens
    if req.thinking_budget is not None:
        return max_tokens, {"type": "enabled", "budget_tokens": req.thinking_budget}
    effort = req.reasoning_effort
    if effort is None:
        return max_tokens, None
    budgets = opts.reasoning_budgets
    if not budgets:
        raise bad_param("reasoning_effort", "reasoning_effort is not enabled on this route.")
    budget = budgets.get(effort)
    if budget is None:
        if effort not in ("xhigh", "max"):
            raise bad_param("reasoning_effort", f"reasoning_effort {effort!r} is not supported.")
        budget = max(budgets.values())
    if not explicit:
        if max_tokens <= budget:
            max_tokens += budget
    elif max_tokens <= budget:
        budget = max_tokens // 2
        if budget < 1024:
            raise bad_param(
                req.max_tokens_param,
                "max_completion_tokens is too small for reasoning_effort (needs at least 2048).",
            )
    return max_tokens, {"type": "enabled", "budget_tokens": budget}


def encode_request(req: Request, model: str, opts: TranslateOptions) -> ProviderRequest:
    """The form -> a Messages request: system texts hoisted (Anthropic takes one system prompt),
    same-role turns merged, an effort turned into a thinking budget that ``max_tokens`` leaves room for."""
    if req.source is Api.ANTHROPIC:  # same API: what the form did not model goes through as sent
        out: dict[str, Any] = {"model": model, **req.extras}
    else:
        req.check_extras(req.extras)
        out = {"model": model}
    system, messages = _encode_messages(req.messages)
    out["max_tokens"], thinking = _thinking(req, opts)
    if system:
        out["system"] = system[0] if len(system) == 1 else [{"type": "text", "text": s} for s in system]
    out["messages"] = messages
    if req.stop:
        out["stop_sequences"] = req.stop
    new_api = opts.anthropic_version >= _NO_SAMPLING_VERSION
    for key, value, default in (
        ("temperature", req.temperature, 1),
        ("top_p", req.top_p, 1),
        ("top_k", req.top_k, None),
    ):
        if value is None:
            continue
        if new_api:
            if value == default:
                continue
            raise bad_param(key, f"Parameter {key!r} is not supported by this model's API version.")
        if key == "temperature" and not 0 <= value <= 1:
            raise bad_param(key, "temperature must be between 0 and 1 for this model.")
        out[key] = value
    if req.tools:
        out["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": _input_schema(t.schema),
                **({"strict": True} if t.strict else {}),
            }
            for t in req.tools
        ]
        tc = req.tool_choice
        if tc is not None:
            choice: dict[str, Any] = {"type": tc.kind}
            if tc.kind == "tool":
                choice["name"] = tc.name
            if tc.disable_parallel and tc.kind != "none":
                choice["disable_parallel_tool_use"] = True
            if tc.explicit or "disable_parallel_tool_use" in choice:
                out["tool_choice"] = choice
    if req.response_schema is not None:
        out["output_config"] = {"format": {"type": "json_schema", "schema": req.response_schema}}
    if thinking:
        out["thinking"] = thinking
    if req.user:
        out["metadata"] = {"user_id": req.user}
    if req.stream:
        out["stream"] = True
    return messages_request(out, opts)


def messages_request(out: dict[str, Any], opts: TranslateOptions) -> ProviderRequest:
    """A Messages body -> the provider request: the version in a header, or for Anthropic on Vertex
    AI in the body (`opts.anthropic_body_version`), the model then in the path only."""
    version = opts.anthropic_body_version
    if version is None:
        return ProviderRequest("/v1/messages", dumps(out), {"anthropic-version": opts.anthropic_version})
    out.pop("model", None)
    out["anthropic_version"] = version
    return ProviderRequest("/v1/messages", dumps(out), {})

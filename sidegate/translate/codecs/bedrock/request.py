"""The canonical form -> a Bedrock Converse / ConverseStream request (provider side only: no client
speaks Converse). Shapes: botocore's service model (``bedrock-runtime`` ``ConverseRequest``);
mapping table and losses: docs/translation.md, "AWS Bedrock provider (Converse)".
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from sidegate.errors import GatewayError
from sidegate.translate.base import ProviderRequest, TranslateOptions

# Claude on Bedrock takes Anthropic's own thinking field: the same effort -> budget rules, one copy.
from sidegate.translate.codecs.anthropic.request import _thinking as thinking_config
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
from sidegate.translate.common import bad_param, dumps

__all__ = ["decode_request", "encode_request"]

_HEADERS = {"content-type": "application/json"}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif"}
_IMAGE_FORMATS["image/webp"] = "webp"
# Converse's document names: alphanumerics, single whitespace, hyphens, parentheses, brackets.
_NAME_DROP = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")
_SPACES = re.compile(r"\s+")


def decode_request(body: dict[str, Any]) -> Request:
    """Never called: no client speaks Converse (``Api.BEDROCK`` is a provider API only)."""
    raise GatewayError(400, "Bedrock Converse is a provider API only: clients cannot send it.")


def _image(part: Image) -> dict[str, Any]:
    if part.url:
        # Converse takes image bytes only (or an S3 location); the gateway never fetches a URL.
        raise bad_param(
            "messages",
            "This model is served by AWS Bedrock, which takes images as bytes only: send the image "
            "base64-encoded (a data: URL or a base64 source) instead of an http(s) URL.",
        )
    fmt = _IMAGE_FORMATS.get(part.media_type)
    if fmt is None:
        raise bad_param(
            "messages", f"image type {part.media_type!r} is not supported (jpeg, png, gif, webp)."
        )
    return {"image": {"format": fmt, "source": {"bytes": part.data}}}


def _document(part: Document, n: int) -> dict[str, Any]:
    name = _SPACES.sub(" ", _NAME_DROP.sub(" ", part.title or "")).strip()[:200]
    return {"document": {"format": "pdf", "name": name or f"document-{n}", "source": {"bytes": part.data}}}


def _block(part: Part, docs: list[int]) -> dict[str, Any]:
    """One non-text part as a Converse content block (``docs`` counts documents, for their names)."""
    t = type(part)
    if t is ToolCall:
        return {"toolUse": {"toolUseId": part.id, "name": part.name, "input": part.input}}  # type: ignore[union-attr]
    if t is ToolResult:
        # An empty output is an empty list: a blank text block is refused ("text content blocks
        # must be non-empty"), and a placeholder text would tell the model something the tool did not.
        text = part.text  # type: ignore[union-attr]
        result: dict[str, Any] = {"toolUseId": part.call_id, "content": [{"text": text}] if text else []}  # type: ignore[union-attr]
        if part.is_error:  # type: ignore[union-attr]
            result["status"] = "error"  # success is the default: only some models take the field
        return {"toolResult": result}
    if t is Image:
        return _image(part)  # type: ignore[arg-type]
    if t is Document:
        if part.text is not None:  # type: ignore[union-attr]
            return {"text": part.text}  # type: ignore[union-attr]  # plain text: inlined
        docs[0] += 1
        return _document(part, docs[0])  # type: ignore[arg-type]
    assert t is Thinking
    reasoning: dict[str, Any] = {"text": part.text}  # type: ignore[union-attr]
    if part.signature:  # type: ignore[union-attr]
        reasoning["signature"] = part.signature  # type: ignore[union-attr]
    return {"reasoningContent": {"reasoningText": reasoning}}


def _messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(system blocks, Converse turns, whether a turn holds tool blocks). System texts are hoisted
    (Converse takes one system list); adjacent same-role turns merge (Converse refuses them); an
    assistant's empty text is left out (Converse refuses a blank text block, and a turn without
    content). One pass, a block built once per part: the hot path of every Bedrock request."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    docs = [0]
    has_tool_blocks = False
    last_role = ""
    last: list[dict[str, Any]] = []
    for msg in messages:
        role, content = msg.role, msg.content
        if role == "system":
            if type(content) is str:
                if content:  # Converse refuses a blank system block
                    system.append({"text": content})
            else:
                system.extend({"text": p.text} for p in content if p.text)  # type: ignore[union-attr]
            continue
        keep_empty = role == "user"
        if type(content) is str:
            blocks = [{"text": content}] if content or keep_empty else []
        else:
            blocks = []
            for part in content:
                t = type(part)
                if t is Text:
                    if part.text or keep_empty:  # type: ignore[union-attr]
                        blocks.append({"text": part.text})  # type: ignore[union-attr]
                    continue
                if t is ToolCall or t is ToolResult:
                    has_tool_blocks = True
                blocks.append(_block(part, docs))
        if not blocks and not keep_empty:
            continue
        if role == last_role:
            last.extend(blocks)
        else:
            last, last_role = blocks, role
            out.append({"role": role, "content": blocks})
    return system, out, has_tool_blocks


def _tool_config(req: Request, has_tool_blocks: bool) -> dict[str, Any] | None:
    """Converse requires the tools declared as soon as the conversation holds a tool call or result
    (refused here in the client's terms rather than by Bedrock in Converse's). It has no ``none``
    tool choice: without tool blocks in the conversation the tools are left out (the model then
    cannot call one, which is what ``none`` means); with them the tools must stay and the model
    could call one, so ``none`` is refused rather than ignored."""
    tc = req.tool_choice
    if not req.tools and has_tool_blocks:
        raise bad_param(
            "tools",
            "AWS Bedrock needs the tools declared when the conversation holds tool calls or tool "
            "results: send the tools with this request.",
        )
    if not req.tools or (tc is not None and tc.kind == "none"):
        if req.tools and has_tool_blocks:
            raise bad_param(
                "tool_choice",
                "tool_choice 'none' cannot be expressed on AWS Bedrock when the conversation holds "
                "tool calls: Bedrock needs the tools declared and has no way to forbid calling them.",
            )
        return None
    tools = []
    for t in req.tools:
        spec: dict[str, Any] = {"name": t.name}
        if t.description:
            spec["description"] = t.description
        spec["inputSchema"] = {"json": t.schema or {"type": "object", "properties": {}}}
        if t.strict:
            spec["strict"] = True
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    if tc is not None and tc.explicit:
        if tc.kind == "tool":
            config["toolChoice"] = {"tool": {"name": tc.name}}
        elif tc.kind in ("auto", "any"):
            config["toolChoice"] = {tc.kind: {}}
    return config


_MAX_TOKENS_LIMIT = 2**31 - 1
"""Converse's `maxTokens` is a 32-bit integer: a larger bound is the client's 400, not AWS's."""


def _inference(req: Request, opts: TranslateOptions, extra: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if req.max_tokens is not None and req.max_tokens > _MAX_TOKENS_LIMIT:
        name = req.max_tokens_param
        raise bad_param(name, f"{name} must be at most {_MAX_TOKENS_LIMIT} for AWS Bedrock.")
    if req.thinking_budget is not None or req.reasoning_effort is not None:
        # Claude's extended thinking, the one reasoning knob Converse forwards (as a model field),
        # with the budget rules of Anthropic's own API (max_tokens must leave room for it).
        config["maxTokens"], thinking = thinking_config(req, opts)
        if thinking:
            extra["thinking"] = thinking
    elif req.max_tokens is not None:
        config["maxTokens"] = req.max_tokens
    for key, name, value in (("temperature", "temperature", req.temperature), ("top_p", "topP", req.top_p)):
        if value is None:
            continue
        if not 0 <= value <= 1:
            raise bad_param(key, f"{key} must be between 0 and 1 for this model (AWS Bedrock).")
        config[name] = value
    if req.stop:
        config["stopSequences"] = [s for s in req.stop if s]
    return config


def encode_request(req: Request, model: str, opts: TranslateOptions) -> ProviderRequest:
    """The form -> a Converse body. The model travels in the path (quoted whole: model ids hold
    ':' and inference profile ARNs '/'), never in the body."""
    req.check_extras(req.extras)  # no client speaks Converse: every extra goes through its policy
    system, messages, has_tool_blocks = _messages(req.messages)
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    extra: dict[str, Any] = {}
    inference = _inference(req, opts, extra)
    if inference:
        out["inferenceConfig"] = inference
    tool_config = _tool_config(req, has_tool_blocks)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    if req.top_k is not None:
        extra["top_k"] = req.top_k  # not in Converse's common set: the models that take it read it here
    if extra:
        out["additionalModelRequestFields"] = extra
    if req.response_schema is not None:
        schema = {"name": "output", "schema": dumps(req.response_schema).decode()}
        out["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}}
    action = "converse-stream" if req.stream else "converse"
    return ProviderRequest(f"/model/{quote(model, safe='')}/{action}", dumps(out), dict(_HEADERS))

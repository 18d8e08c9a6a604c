"""Gemini ``generateContent`` requests <-> the canonical form: the provider side (``encode_request``:
the form -> a Gemini body and its canonical path) and the client side (``decode_request``, in
:mod:`.decode`). Mapping tables: docs/translation.md, "Gemini API".
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.translate.base import ProviderRequest, TranslateOptions
from sidegate.translate.codecs.form import (
    Document,
    Image,
    Message,
    Request,
    Text,
    Thinking,
    ToolCall,
    ToolResult,
)
from sidegate.translate.codecs.gemini.decode import decode_request
from sidegate.translate.common import bad_param, dumps

__all__ = ["SKIP_SIGNATURE", "decode_request", "encode_request", "provider_path"]

# Google's documented thought signature for a function call Gemini did not generate (a
# conversation from another model or client): Gemini 3 refuses a model turn's function call
# without a signature, and a signature of another provider would not validate.
SKIP_SIGNATURE = "skip_thought_signature_validator"

_MIME_BY_EXT = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
}


def provider_path(model: str, stream: bool) -> str:
    """The canonical Gemini API path (the per-try stage maps it to Vertex's itself)."""
    if stream:
        return f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
    return f"/v1beta/models/{model}:generateContent"


def _file_data(url: str) -> dict[str, Any]:
    """An image by URL -> ``fileData``; its MIME type from the extension when it shows one (Gemini
    infers it otherwise)."""
    out: dict[str, Any] = {"fileUri": url}
    tail = url.split("?", 1)[0].rsplit("/", 1)[-1]
    ext = tail.rsplit(".", 1)[-1].lower() if "." in tail else ""
    mime = _MIME_BY_EXT.get(ext)
    if mime:
        out["mimeType"] = mime
    return {"fileData": out}


def _response_object(result: ToolResult) -> dict[str, Any]:
    """A tool result as a ``functionResponse.response`` (Gemini takes an object): a JSON object text
    goes as that object, any other text as ``{"result": text}`` (``{"error": text}`` for a failure)."""
    text = result.text
    if not result.is_error and text[:1] == "{":
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"error" if result.is_error else "result": text}


def _user_parts(content: list[Any], names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for p in content:
        t = type(p)
        if t is Text:
            if p.text:  # Gemini refuses an empty text part
                parts.append({"text": p.text})
        elif t is ToolResult:
            name = names.get(p.call_id)
            if name is None:
                raise bad_param("messages", f"tool result {p.call_id!r} answers no earlier tool call.")
            parts.append({"functionResponse": {"name": name, "response": _response_object(p)}})
        elif t is Image:
            if p.url:
                parts.append(_file_data(p.url))
            else:
                parts.append({"inlineData": {"mimeType": p.media_type, "data": p.data}})
        elif t is Document:
            if p.text is not None:
                parts.append({"text": p.text})
            else:
                parts.append({"inlineData": {"mimeType": p.media_type or "application/pdf", "data": p.data}})
        else:
            raise bad_param("messages", f"content part {t.__name__} is not supported upstream.")
    return parts


def _model_parts(content: list[Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """A model turn: texts and function calls. Earlier thoughts are not sent (Gemini does not read
    past thoughts, and another provider's signature would not validate); each function call carries
    the validator-skip signature (the form keeps no signature of Gemini's own)."""
    parts: list[dict[str, Any]] = []
    for p in content:
        t = type(p)
        if t is Text:
            if p.text:
                parts.append({"text": p.text})
        elif t is ToolCall:
            names[p.id] = p.name
            parts.append(
                {"functionCall": {"name": p.name, "args": p.input}, "thoughtSignature": SKIP_SIGNATURE}
            )
        elif t is not Thinking:
            raise bad_param("messages", f"assistant content part {t.__name__} is not supported upstream.")
    return parts


def _contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system instruction parts, contents). System messages are hoisted (Gemini takes one system
    instruction); adjacent turns of one role merge, as Gemini's alternating turns require."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name: Gemini pairs responses by name
    for msg in messages:
        content = msg.content
        if msg.role == "system":
            if isinstance(content, str):
                system.append({"text": content})
            else:
                system.extend({"text": p.text} for p in content if type(p) is Text)  # type: ignore[union-attr]
            continue
        role = "model" if msg.role == "assistant" else "user"
        if isinstance(content, str):
            parts = [{"text": content}] if content else []  # Gemini refuses an empty text part
        elif role == "model":
            parts = _model_parts(content, names)
        else:
            parts = _user_parts(content, names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _thinking(req: Request, opts: TranslateOptions) -> dict[str, Any] | None:
    """An Anthropic thinking budget goes as Gemini's ``thinkingBudget``; an OpenAI effort becomes
    the route's budget for it (``reasoning_budgets``, as for Anthropic providers)."""
    budget = req.thinking_budget
    if budget is None and req.reasoning_effort is not None:
        budgets = opts.reasoning_budgets
        if not budgets:
            raise bad_param("reasoning_effort", "reasoning_effort is not enabled on this route.")
        budget = budgets.get(req.reasoning_effort)
        if budget is None:
            if req.reasoning_effort not in ("xhigh", "max"):
                raise bad_param(
                    "reasoning_effort", f"reasoning_effort {req.reasoning_effort!r} is not supported."
                )
            budget = max(budgets.values())
    if budget is None:
        return None
    return {"thinkingBudget": budget, "includeThoughts": True}


def _tools(req: Request, out: dict[str, Any]) -> None:
    """Function declarations with ``parametersJsonSchema`` (full JSON Schema: the OpenAPI-subset
    ``parameters`` refuses keywords such as ``additionalProperties`` and ``$ref`` that OpenAI and
    Anthropic tools use); the tool choice as ``functionCallingConfig``."""
    decls = []
    for t in req.tools or ():
        decl: dict[str, Any] = {"name": t.name}
        if t.description:
            decl["description"] = t.description
        schema = t.schema
        if schema is not None and not isinstance(schema, dict):
            raise bad_param("tools", "function parameters must be a JSON Schema object.")
        if schema and not (schema.keys() <= {"type", "properties"} and not schema.get("properties")):
            decl["parametersJsonSchema"] = schema  # a function without parameters declares none
        decls.append(decl)
    out["tools"] = [{"functionDeclarations": decls}]
    tc = req.tool_choice
    if tc is None or not tc.explicit:
        return
    config: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE"}.get(tc.kind, "ANY")}
    if tc.kind == "tool":
        config["allowedFunctionNames"] = [tc.name]
    out["toolConfig"] = {"functionCallingConfig": config}


def encode_request(req: Request, model: str, opts: TranslateOptions) -> ProviderRequest:
    """The form -> a ``generateContent`` body (no model in it: the model is in the path)."""
    req.check_extras(req.extras)  # a Gemini client never gets here: gemini_gemini is a passthrough
    system, contents = _contents(req.messages)
    if not contents:
        raise bad_param("messages", "the conversation has no user or assistant content.")
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    if req.tools:
        _tools(req, out)
    config: dict[str, Any] = {}
    if req.max_tokens is not None:
        config["maxOutputTokens"] = req.max_tokens
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if req.top_p is not None:
        config["topP"] = req.top_p
    if req.top_k is not None:
        config["topK"] = req.top_k
    if req.stop:
        config["stopSequences"] = list(req.stop)
    if req.response_schema is not None:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = req.response_schema
    thinking = _thinking(req, opts)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        out["generationConfig"] = config
    return ProviderRequest(provider_path(model, req.stream), dumps(out), {})

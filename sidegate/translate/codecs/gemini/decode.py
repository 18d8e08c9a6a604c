"""A Gemini client's ``generateContent`` body -> the canonical form (the client side).

Gemini's function calls may come without ids: the decoder gives each a stable id (its place in the
conversation) and pairs each ``functionResponse`` with its call by id when both have one, else with
the oldest unanswered call of the same name, as Gemini itself does.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from sidegate.errors import Api
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
from sidegate.translate.codecs.gemini.params import (
    camel_keys,
    check_config,
    check_extras,
    check_top_level,
    json_schema,
)
from sidegate.translate.common import bad_param, is_int, is_number, need_str

__all__ = ["decode_request"]

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_P = "contents"


def _obj(value: Any, param: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_param(param, f"{what} must be an object.")
    return value


def _node(value: Any, param: str, what: str) -> dict[str, Any]:
    """One of the API's own objects (a part, a config...), its keys in camelCase."""
    return camel_keys(_obj(value, param, what))


def _list(value: Any, param: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise bad_param(param, f"{what} must be a list.")
    return value


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def _inline(data: dict[str, Any]) -> Part:
    mime = need_str(data.get("mimeType", ""), _P, "inlineData.mimeType").lower()
    payload = need_str(data.get("data", ""), _P, "inlineData.data")
    if "-" in payload or "_" in payload:
        # Google takes either base64 alphabet and google-genai sends the URL-safe one (pydantic's
        # bytes); OpenAI's data URLs and Anthropic's `source.data` take the standard one only.
        payload = payload.translate(_URLSAFE_TO_STANDARD)
    if mime in _IMAGE_TYPES:
        return Image(media_type=mime, data=payload)
    if mime == "application/pdf":
        return Document(mime, payload)
    raise bad_param(_P, f"inlineData of type {mime!r} is not supported upstream (jpeg, png, gif, webp, pdf).")


def _file(data: dict[str, Any]) -> Part:
    """``fileData``: an image by URL. Google's own file URIs (the Files API, Cloud Storage) cannot
    be read by another provider."""
    uri = need_str(data.get("fileUri", ""), _P, "fileData.fileUri")
    mime = data.get("mimeType")
    if uri.startswith("gs://") or uri.startswith("https://generativelanguage.googleapis.com/"):
        raise bad_param(_P, "Google file URIs (Files API, gs://) cannot be read by this provider.")
    if not uri.startswith(("https://", "http://")):
        raise bad_param(_P, "fileData.fileUri must be an https URL.")
    if mime is not None and not (isinstance(mime, str) and mime.lower().startswith("image/")):
        raise bad_param(_P, f"fileData of type {mime!r} is not supported upstream (images only).")
    return Image(url=uri)


def _result_text(response: dict[str, Any]) -> tuple[str, bool]:
    """A ``functionResponse.response`` as a tool result text: ``{"result"|"output": text}`` as that
    text, ``{"error": ...}`` as a failed result, any other object as its JSON."""
    if len(response) == 1:
        ((key, value),) = response.items()
        if key in ("result", "output", "error") and isinstance(value, str):
            return value, key == "error"
        if key == "error":
            return orjson.dumps(value).decode(), True
    return orjson.dumps(response).decode(), False


class _Calls:
    """Ids of the conversation's function calls, and the unanswered ones by name."""

    __slots__ = ("count", "known", "pending")

    def __init__(self) -> None:
        self.count = 0
        self.pending: dict[str, deque[str]] = {}
        self.known: set[str] = set()

    def call(self, raw_id: Any, name: str) -> str:
        cid = raw_id if isinstance(raw_id, str) and raw_id else f"call_{self.count}"
        self.count += 1
        self.known.add(cid)
        self.pending.setdefault(name, deque()).append(cid)
        return cid

    def response(self, raw_id: Any, name: str) -> str:
        queue = self.pending.get(name)
        if isinstance(raw_id, str) and raw_id in self.known:
            if queue and raw_id in queue:
                queue.remove(raw_id)
            return raw_id
        if queue:
            return queue.popleft()
        raise bad_param(_P, f"functionResponse {name!r} answers no earlier functionCall.")


def _parts(role: str, parts: list[Any], calls: _Calls) -> list[Part]:
    out: list[Part] = []
    for part in parts:
        if type(part) is dict and len(part) == 1:  # the common part: {"text": "..."} alone
            text = part.get("text")
            if type(text) is str:
                if text:
                    out.append(Text(text))
                continue
        part = _node(part, _P, "a part")
        text = part.get("text")
        if text is not None:
            text = need_str(text, _P, "text")
            # An earlier thought is not forwarded: no other provider can take it back (a documented
            # loss). An empty text (google-genai's chat history keeps a stream's last one) says nothing.
            if text and part.get("thought") is not True:
                out.append(Text(text))
        elif role == "model" and part.get("functionCall") is not None:
            fc = _node(part["functionCall"], _P, "functionCall")
            name = need_str(fc.get("name", ""), _P, "functionCall.name")
            args = fc.get("args") or {}
            if not isinstance(args, dict):
                raise bad_param(_P, "functionCall.args must be an object.")
            out.append(ToolCall(calls.call(fc.get("id"), name), name, args))
        elif role == "user" and part.get("functionResponse") is not None:
            fr = _node(part["functionResponse"], _P, "functionResponse")
            name = need_str(fr.get("name", ""), _P, "functionResponse.name")
            if fr.get("parts"):
                raise bad_param(_P, "functionResponse parts (multimodal results) are not supported upstream.")
            text, is_error = _result_text(_obj(fr.get("response", {}), _P, "functionResponse.response"))
            out.append(ToolResult(calls.response(fr.get("id"), name), text, is_error))
        elif role == "user" and part.get("inlineData") is not None:
            out.append(_inline(_node(part["inlineData"], _P, "inlineData")))
        elif role == "user" and part.get("fileData") is not None:
            out.append(_file(_node(part["fileData"], _P, "fileData")))
        else:
            kinds = [k for k in part if k not in ("thoughtSignature", "thought", "videoMetadata")]
            if kinds:  # a part of only a signature carries nothing another provider can take
                raise bad_param(_P, f"{role} part {kinds[0]!r} is not supported upstream.")
    return out


def _messages(body: dict[str, Any]) -> list[Message]:
    out: list[Message] = []
    system = body.get("systemInstruction")
    if system is not None:
        texts = []
        for part in _list(
            _node(system, "systemInstruction", "systemInstruction").get("parts", []),
            "systemInstruction",
            "systemInstruction.parts",
        ):
            part = _node(part, "systemInstruction", "a system part")
            texts.append(Text(need_str(part.get("text"), "systemInstruction", "a system part's text")))
        if texts:
            out.append(Message("system", texts[0].text if len(texts) == 1 else texts))
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise bad_param(_P, "contents must be a non-empty list.")
    calls = _Calls()
    for content in contents:
        if type(content) is not dict or "_" in "".join(content):
            content = _node(content, _P, "each content")
        role = content.get("role") or "user"
        if role == "function":  # the API's older name for the turn holding function responses
            role = "user"
        if role not in ("user", "model"):
            raise bad_param(_P, f"content role {role!r} is not supported.")
        raw = content.get("parts", [])
        if type(raw) is list and len(raw) == 1:  # the common turn: one text part
            only = raw[0]
            text = only.get("text") if type(only) is dict and len(only) == 1 else None
            if type(text) is str and text:
                out.append(Message("assistant" if role == "model" else "user", text))
                continue
        parts = _parts(role, _list(raw, _P, "parts"), calls)
        # One text part is a plain string: the form's cheapest shape, and what other APIs send.
        text = parts[0].text if len(parts) == 1 and type(parts[0]) is Text else None
        out.append(Message("assistant" if role == "model" else "user", parts if text is None else text))
    return out


def _tools(body: dict[str, Any], req: Request) -> None:
    tools: list[Tool] = []
    for entry in _list(body["tools"], "tools", "tools"):
        entry = _node(entry, "tools", "a tool")
        for key, value in entry.items():
            if key != "functionDeclarations" and value is not None:
                raise bad_param("tools", f"tool {key!r} (a Google server tool) is not supported upstream.")
        for decl in _list(entry.get("functionDeclarations", []), "tools", "functionDeclarations"):
            decl = _node(decl, "tools", "a function declaration")
            name = need_str(decl.get("name", ""), "tools", "function name")
            desc = decl.get("description")
            desc = need_str(desc, "tools", "function description") if desc else None
            if decl.get("parametersJsonSchema") is not None:
                schema = _obj(decl["parametersJsonSchema"], "tools", "parametersJsonSchema")
            elif decl.get("parameters") is not None:
                schema = json_schema(decl["parameters"], "tools")
            else:
                schema = {"type": "object", "properties": {}}
            tools.append(Tool(name, desc, schema))
    config = _node(body.get("toolConfig") or {}, "toolConfig", "toolConfig")
    fcc = _node(config.get("functionCallingConfig") or {}, "toolConfig", "functionCallingConfig")
    mode = fcc.get("mode") or "AUTO"
    names = fcc.get("allowedFunctionNames")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise bad_param("toolConfig", "allowedFunctionNames must be a list of strings.")
    if mode == "ANY" and names:
        if len(names) == 1:
            req.tool_choice = ToolChoice("tool", names[0])
        else:  # "call one of these": the others are not callable this turn
            tools = [t for t in tools if t.name in names]
            req.tool_choice = ToolChoice("any")
    elif mode in ("ANY", "NONE"):
        req.tool_choice = ToolChoice(mode.lower() if mode == "NONE" else "any")
    elif mode not in ("AUTO", "VALIDATED", "MODE_UNSPECIFIED"):
        raise bad_param("toolConfig", f"functionCallingConfig mode {mode!r} is not supported.")
    if tools:
        req.tools = tools
    elif req.tool_choice is not None and req.tool_choice.kind != "none":
        raise bad_param("toolConfig", "functionCallingConfig mode ANY requires function declarations.")
    else:
        req.tool_choice = None


def _generation(config: dict[str, Any], req: Request) -> None:
    check_config(config)
    p = "generationConfig"
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None:
        if not is_int(max_tokens) or max_tokens < 1:
            raise bad_param(p, "generationConfig.maxOutputTokens must be a positive integer.")
        req.max_tokens = max_tokens
    for key, attr in (("temperature", "temperature"), ("topP", "top_p")):
        value = config.get(key)
        if value is not None:
            if not is_number(value):
                raise bad_param(p, f"generationConfig.{key} must be a number.")
            setattr(req, attr, value)
    top_k = config.get("topK")
    if top_k is not None:
        if not is_number(top_k) or top_k != int(top_k):
            raise bad_param(p, "generationConfig.topK must be an integer.")
        req.top_k = int(top_k)
    stop = config.get("stopSequences")
    if stop is not None:
        if not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise bad_param(p, "generationConfig.stopSequences must be a list of strings.")
        req.stop = stop or None
    mime = config.get("responseMimeType") or "text/plain"
    if config.get("responseJsonSchema") is not None:
        req.response_schema = _obj(config["responseJsonSchema"], p, "responseJsonSchema")
    elif config.get("responseSchema") is not None:
        req.response_schema = json_schema(config["responseSchema"], p)
    if req.response_schema is not None and mime != "application/json":
        raise bad_param(p, "a response schema needs responseMimeType 'application/json'.")
    if mime == "application/json" and req.response_schema is None:
        raise bad_param(
            p,
            "responseMimeType 'application/json' without a schema has no upstream equivalent; add responseJsonSchema.",
        )
    if mime not in ("text/plain", "application/json"):
        raise bad_param(p, f"responseMimeType {mime!r} is not supported upstream.")
    thinking = _node(config.get("thinkingConfig") or {}, p, "thinkingConfig")
    budget, level = thinking.get("thinkingBudget"), thinking.get("thinkingLevel")
    if budget is not None:
        if not is_int(budget) or budget < -1:
            raise bad_param(p, "thinkingConfig.thinkingBudget must be an integer (-1 for dynamic).")
        if budget > 0:
            req.thinking_budget = budget
        elif budget == -1:
            req.reasoning_effort = "medium"  # dynamic thinking: the route's middle effort
    elif level is not None and level != "THINKING_LEVEL_UNSPECIFIED":
        req.reasoning_effort = need_str(level, p, "thinkingConfig.thinkingLevel").lower()


def decode_request(body: dict[str, Any]) -> Request:
    """Gemini client body -> Request (its stream flag is in the path: ``TranslateOptions.stream``)."""
    body = camel_keys(body)
    check_top_level(body)
    req = Request(Api.GEMINI, _messages(body), check_extras)
    req.max_tokens_param = "generationConfig"
    if body.get("tools"):
        _tools(body, req)
    elif body.get("toolConfig"):
        fcc = _node(
            _node(body["toolConfig"], "toolConfig", "toolConfig").get("functionCallingConfig") or {},
            "toolConfig",
            "functionCallingConfig",
        )
        if fcc.get("mode") == "ANY":
            raise bad_param("toolConfig", "functionCallingConfig mode ANY requires function declarations.")
    config = body.get("generationConfig")
    if config is not None:
        _generation(_node(config, "generationConfig", "generationConfig"), req)
    return req

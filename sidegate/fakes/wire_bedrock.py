"""AWS Bedrock's Converse wire format: the request checks, answers, event-stream events and errors.

`POST /model/{modelId}/converse` answers JSON; `/model/{modelId}/converse-stream` answers
`application/vnd.amazon.eventstream` frames (messageStart, contentBlockStart/Delta/Stop, messageStop,
metadata with the usage), each payload padded with a `p` field as Bedrock pads them. Errors are
`{"message": ...}` with the exception's name in `x-amzn-errortype`; a stream fails mid-way with an
exception frame. Every body is checked against botocore's own Converse input shape (the model id
from the path), then against the conversation rules Bedrock enforces (a user turn first, turns
alternating, each toolUse answered by a toolResult in the next turn).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from functools import cache
from typing import Any

import orjson

from sidegate.fakes.answer import Answer
from sidegate.fakes.text import split_pieces, split_words
from sidegate.translate.codecs.bedrock.eventstream import encode_event, encode_exception

__all__ = [
    "EVENTSTREAM",
    "answer_body",
    "error",
    "exception_frame",
    "problem",
    "shim_body",
    "stream_frames",
]

EVENTSTREAM = "application/vnd.amazon.eventstream"
# status -> (x-amzn-errortype, default message), as Bedrock Runtime answers them.
ERRORS = {
    400: ("ValidationException", "Invalid request."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The requested resource could not be found."),
    408: ("ModelTimeoutException", "The request took too long to process."),
    424: ("ModelErrorException", "The model failed to process the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: (
        "InternalServerException",
        "The server encountered an internal error while processing the request.",
    ),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "content_filtered",
}
_BEDROCK_STOPS = frozenset({
    "end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened", "content_filtered",
    "malformed_model_output", "malformed_tool_use", "model_context_window_exceeded",
})  # fmt: skip
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_CAMEL_USAGE = {
    "cache_read_input_tokens": "cacheReadInputTokens",
    "cache_creation_input_tokens": "cacheWriteInputTokens",
}


def request_id() -> str:
    return str(uuid.uuid4())


def error(status: int, err: str | dict[str, Any] | None) -> tuple[str, bytes]:
    """(`x-amzn-errortype`, body) for `status`; `err` is the message or {"type", "message"}."""
    etype, message = ERRORS.get(
        status, ("InternalServerException" if status >= 500 else "ValidationException", f"Error {status}")
    )
    if isinstance(err, str):
        message = err
    elif isinstance(err, dict):
        etype, message = str(err.get("type") or etype), str(err.get("message") or message)
    return etype, orjson.dumps({"message": message})


def exception_frame(err: dict[str, Any]) -> bytes:
    """A mid-stream exception frame: `throttlingException`, `modelStreamErrorException` (default),
    `internalServerException`, `serviceUnavailableException`, `validationException`."""
    etype = str(err.get("type") or "modelStreamErrorException")
    etype = etype[0].lower() + etype[1:]
    message = str(err.get("message") or "The model stream failed.")
    return encode_exception(etype, orjson.dumps({"message": message}))


# -- the request -------------------------------------------------------------------------------------
@cache
def _input_shapes() -> tuple[Any, Any]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    return model.operation_model("Converse").input_shape, model.operation_model("ConverseStream").input_shape


class _BadBlob(ValueError):
    pass


def _params(shape: Any, value: Any, where: str = "") -> Any:
    """The wire JSON as botocore's parameters: blobs (image, document bytes) base64-decoded (its
    validator would take any string for a blob)."""
    kind = shape.type_name
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _BadBlob(f"1 validation error detected: Value at '{where[1:]}' failed to satisfy constraint: "
                           "Member must be base64-encoded bytes") from None  # fmt: skip
    if kind == "structure" and isinstance(value, dict) and not getattr(shape, "is_document_type", False):
        members = shape.members
        return {k: _params(members[k], v, f"{where}.{k}") if k in members else v for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_params(shape.member, v, f"{where}.{i}") for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: _params(shape.value, v, f"{where}.{k}") for k, v in value.items()}
    return value


def problem(body: dict[str, Any], model_id: str, stream: bool) -> str | None:
    """Bedrock's ValidationException message for a body it refuses, or None."""
    from botocore.validate import ParamValidator

    shape = _input_shapes()[1 if stream else 0]
    try:
        params = _params(shape, body)
    except _BadBlob as e:
        return str(e)
    report = ParamValidator().validate({**params, "modelId": model_id}, shape)
    if report.has_errors():
        return report.generate_report()
    return _conversation_problem(body)


def _conversation_problem(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    uses_tools = False
    previous_uses: list[str] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ("user", "assistant"):  # botocore's validator does not check enums
            return (f"1 validation error detected: Value '{role}' at 'messages.{i + 1}.member.role' failed to "
                    "satisfy constraint: Member must satisfy enum value set: [user, assistant]")  # fmt: skip
        if i == 0 and role != "user":
            return "A conversation must start with a user message. Try again with a conversation that starts with a user message."
        if i and role == messages[i - 1].get("role"):
            return ("A conversation must alternate between user and assistant roles. Make sure the conversation "
                    "alternates between user and assistant roles and try again.")  # fmt: skip
        content = msg.get("content") or []
        for j, block in enumerate(content):
            if "text" in block and not str(block["text"]).strip():
                return (f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text "
                        "to the text field, and try again.")  # fmt: skip
        uses = [b["toolUse"]["toolUseId"] for b in content if "toolUse" in b]
        results = [b["toolResult"]["toolUseId"] for b in content if "toolResult" in b]
        uses_tools = uses_tools or bool(uses or results)
        if len(results) > len(previous_uses):
            return (f"The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse "
                    "blocks of previous turn.")  # fmt: skip
        missing = [u for u in previous_uses if u not in results]
        if missing:
            return f"Expected toolResult blocks at messages.{i}.content for the following Ids: {', '.join(missing)}"
        previous_uses = uses
    if uses_tools and not body.get("toolConfig"):
        return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
    return None


def _text(blocks: Any) -> str:
    parts: list[str] = []
    for b in blocks or []:
        if isinstance(b.get("text"), str):
            parts.append(b["text"])
        elif "json" in b:
            parts.append(orjson.dumps(b["json"]).decode())
    return " ".join(p for p in parts if p)


def shim_body(body: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The request seen as the other fakes see theirs (Anthropic-shaped: `system`, `messages` with
    text and tool_result blocks, `tools` with `input_schema`), so the answer, echo and usage are
    the same whichever API serves a turn."""
    messages = []
    for msg in body.get("messages") or []:
        content: list[dict[str, Any]] = []
        for b in msg.get("content") or []:
            if isinstance(b.get("text"), str):
                content.append({"type": "text", "text": b["text"]})
            elif "toolResult" in b:
                content.append({"type": "tool_result", "content": _text(b["toolResult"].get("content"))})
        messages.append({"role": msg.get("role"), "content": content})
    tools = [
        {"name": t["toolSpec"]["name"], "input_schema": t["toolSpec"].get("inputSchema", {}).get("json", {})}
        for t in (body.get("toolConfig") or {}).get("tools") or []
        if "toolSpec" in t
    ]
    return {"model": model_id, "system": _text(body.get("system")), "messages": messages, "tools": tools}


# -- the answer ----------------------------------------------------------------------------------------
def _stop_reason(a: Answer) -> str:
    if a.raw_finish in _BEDROCK_STOPS:
        return str(a.raw_finish)
    return _STOP.get(a.finish_reason, "end_turn")


def _usage(a: Answer) -> dict[str, int]:
    u = {"inputTokens": a.prompt_tokens, "outputTokens": a.completion_tokens,
         "totalTokens": a.prompt_tokens + a.completion_tokens}  # fmt: skip
    for k, v in a.usage_extra.items():
        u[_CAMEL_USAGE.get(k, k)] = v
    return u


def _tool_id(call_id: str) -> str:
    return "tooluse_" + call_id[5:] if call_id.startswith("call_") else call_id


def _input(arguments: str) -> Any:
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}


def answer_body(a: Answer, latency_ms: int) -> bytes:
    content: list[dict[str, Any]] = []
    if a.text is not None:
        content.append({"text": a.text})
    for c in a.tool_calls:
        content.append(
            {"toolUse": {"toolUseId": _tool_id(c.id), "name": c.name, "input": _input(c.arguments)}}
        )
    return orjson.dumps({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": _stop_reason(a),
        "usage": _usage(a),
        "metrics": {"latencyMs": latency_ms},
    })  # fmt: skip


def _event(name: str, payload: dict[str, Any]) -> bytes:
    # Bedrock pads every event's payload so its length does not tell the text's.
    payload["p"] = _PAD[: 1 + len(orjson.dumps(payload)) % len(_PAD)]
    return encode_event(name, orjson.dumps(payload))


def stream_frames(a: Answer, latency_ms: int) -> list[bytes]:
    """Every frame of a ConverseStream answer, the last one `metadata` (the usage)."""
    out = [_event("messageStart", {"role": "assistant"})]
    index = 0
    if a.text is not None:
        for piece in split_words(a.text, a.chunks):
            out.append(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
        out.append(_event("contentBlockStop", {"contentBlockIndex": 0}))
        index = 1
    for c in a.tool_calls:
        start = {"toolUse": {"toolUseId": _tool_id(c.id), "name": c.name}}
        out.append(_event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        for piece in split_pieces(c.arguments, max(2, a.chunks)):
            out.append(
                _event(
                    "contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
                )
            )
        out.append(_event("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    out.append(_event("messageStop", {"stopReason": _stop_reason(a)}))
    out.append(_event("metadata", {"usage": _usage(a), "metrics": {"latencyMs": latency_ms}}))
    return out

"""parse: one JSON parse per request; validate the fields every later stage relies on."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.core.intake import COMPLETIONS, COUNT_TOKENS, EMBEDDINGS, GEMINI_STREAM
from sidegate.errors import Api, GatewayError
from sidegate.jsondup import Undecided, duplicate_key
from sidegate.translate.count_tokens import check_count_tokens_request
from sidegate.translate.embeddings import check_embeddings_request


class ParseFeature(Feature):
    name = "parse"
    endpoints = frozenset({COMPLETIONS, EMBEDDINGS, COUNT_TOKENS})

    def __init__(self, max_body_bytes: int = 8 * 1024 * 1024):
        self.max_body_bytes = max_body_bytes

    @classmethod
    def from_config(cls, cfg: SidegateConfig) -> ParseFeature:
        return cls(cfg.listener.max_request_bytes)

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if len(ctx.raw_body) > self.max_body_bytes:
            raise GatewayError(413, f"Request body too large: {len(ctx.raw_body)} bytes (limit {self.max_body_bytes}).")
        if ctx.method != "POST":
            raise GatewayError(405, f"Method {ctx.method} not allowed on {ctx.path.split('?', 1)[0]}; use POST.")
        if not ctx.raw_body:
            raise GatewayError(400, "Request body is empty: send a JSON object.")
        try:
            body = orjson.loads(ctx.raw_body)
        except orjson.JSONDecodeError as exc:
            reason = "not valid UTF-8" if "utf-8" in str(exc).lower() else "not valid JSON"
            raise GatewayError(400, f"Request body is {reason}: {exc}.") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "Request body must be a JSON object.")
        try:
            dup = duplicate_key(ctx.raw_body, body)
        except Undecided as exc:
            raise GatewayError(400, str(exc)) from None
        if dup is not None:
            # The body goes on as is (direct lane) to parsers that may keep the first value.
            shown = dup if len(dup) <= 64 else dup[:64] + "..."
            raise GatewayError(400, f"Duplicate key {shown!r} in the request body: a key may appear only once per object.", code="duplicate_key")
        if ctx.api is Api.GEMINI:  # the model and the stream flag came with the path (intake)
            return _gemini(ctx, body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "Missing required parameter: 'model'.", param="model")
        if ctx.endpoint != COMPLETIONS:
            return self._other_endpoint(ctx, body, model)
        if ctx.api is Api.RESPONSES:
            _check_responses(body)
        else:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise GatewayError(400, "'messages' must be a non-empty array.", param="messages")
            if not all(isinstance(m, dict) for m in messages):
                raise GatewayError(400, "Every entry of 'messages' must be an object.", param="messages")
        stream = body.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise GatewayError(400, "'stream' must be a boolean.", param="stream")
        ctx.body = body
        ctx.model = model
        ctx.stream = bool(stream)
        if ctx.api is Api.OPENAI:
            opts = body.get("stream_options")
            if opts is not None and not isinstance(opts, dict):
                raise GatewayError(400, "'stream_options' must be an object.", param="stream_options")
            ctx.client_wants_usage = bool(ctx.stream and opts and opts.get("include_usage"))
        else:
            # Anthropic streams always carry usage (message_start/message_delta), Responses streams
            # too (response.completed's `response.usage`): nothing to inject, nothing to hide.
            ctx.client_wants_usage = ctx.stream
        return None

    @staticmethod
    def _other_endpoint(ctx: RequestContext, body: dict[str, Any], model: str) -> None:
        """Embeddings and count_tokens: their own checks; never streamed (the endpoint is in the
        metadata since intake: a completion's is not, it is the default)."""
        if ctx.endpoint == EMBEDDINGS:
            check_embeddings_request(body)
        elif ctx.endpoint == COUNT_TOKENS:
            check_count_tokens_request(body)
        ctx.body = body
        ctx.model = model


def _check_responses(body: dict[str, Any]) -> None:
    """What every later stage relies on in a Responses request (`POST /v1/responses`): `input` a
    non-empty string or a non-empty array of item objects, `instructions` a string. The rest is
    the translators' (or the provider's) to judge. Called only for Api.RESPONSES, so chat and
    messages requests pay nothing for it."""
    items = body.get("input")
    if isinstance(items, str):
        if not items:
            raise GatewayError(400, "'input' must be a non-empty string or a non-empty array of items.", param="input")
    elif isinstance(items, list) and items:
        if not all(isinstance(i, dict) for i in items):
            raise GatewayError(400, "Every entry of 'input' must be an object (an input item).", param="input")
    elif items is None:
        # previous_response_id continues a stored conversation: the new turn still needs input.
        raise GatewayError(400, "Missing required parameter: 'input'.", param="input")
    else:
        raise GatewayError(400, "'input' must be a non-empty string or a non-empty array of items.", param="input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise GatewayError(400, "'instructions' must be a string.", param="instructions")


def _gemini(ctx: RequestContext, body: dict[str, Any]) -> None:
    """A Gemini API request (`models/{model}:generateContent|streamGenerateContent|countTokens`):
    its checks, in Google's wording (`field: reason`); the model and stream flag came with the path.
    A stream is Server-Sent Events only (`?alt=sse`, what google-genai asks): Google's other
    framing, one JSON array, is not served rather than answered in a shape the client cannot read."""
    if ctx.endpoint == COUNT_TOKENS and "generateContentRequest" in body:
        inner = body["generateContentRequest"]
        if not isinstance(inner, dict):
            raise GatewayError(400, "generateContentRequest: must be an object.")
        check_gemini_request(inner, "generateContentRequest.")
    else:
        check_gemini_request(body)
    if ctx.stream and "alt=sse" not in ctx.path.partition("?")[2].split("&"):
        raise GatewayError(400, f"{GEMINI_STREAM} is served as Server-Sent Events only: add 'alt=sse' to the query.")
    ctx.body = body
    ctx.client_wants_usage = ctx.stream  # every Gemini stream chunk carries usageMetadata


_GEMINI_OBJECTS = ("generationConfig", "generation_config", "systemInstruction", "system_instruction",
                   "toolConfig", "tool_config")  # fmt: skip
_GEMINI_LISTS = ("tools", "safetySettings", "safety_settings")


def check_gemini_request(body: dict[str, Any], where: str = "") -> None:
    """What every later stage relies on in a Gemini request: `contents` a non-empty array of
    Content objects whose `parts` are arrays of objects, `role` a string; the config, system
    instruction and tool blocks of the right JSON type (both spellings: Google's JSON accepts the
    proto field names too). The rest is the translators' (or the provider's) to judge."""
    contents = body.get("contents")
    if contents is None:
        raise GatewayError(400, f"{where}contents: contents is not specified.", param="contents")
    if not isinstance(contents, list) or not contents:
        raise GatewayError(400, f"{where}contents: must be a non-empty array of Content objects.", param="contents")
    # Exact type checks, no generator: the body is orjson's (dict, list, str exactly), and a
    # conversation of many turns is walked on every request (~0.15 us a turn).
    for i, content in enumerate(contents):
        if type(content) is not dict:
            raise GatewayError(400, f"{where}contents[{i}]: must be a Content object.", param="contents")
        parts = content.get("parts")
        if type(parts) is not list or not parts:
            raise GatewayError(400, f"{where}contents[{i}].parts: must be a non-empty array of Part objects.",
                               param="contents")  # fmt: skip
        for part in parts:
            if type(part) is not dict:
                raise GatewayError(400, f"{where}contents[{i}].parts: must be a non-empty array of Part objects.",
                                   param="contents")  # fmt: skip
        role = content.get("role")
        if role is not None and type(role) is not str:
            raise GatewayError(400, f"{where}contents[{i}].role: must be a string.", param="contents")
    for name in _GEMINI_OBJECTS:
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise GatewayError(400, f"{where}{name}: must be an object.", param=name)
    for name in _GEMINI_LISTS:
        value = body.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            raise GatewayError(400, f"{where}{name}: must be an array of objects.", param=name)

"""What the Gemini fake refuses, as Gemini does with a 400 `INVALID_ARGUMENT`: unknown fields, values
`google-genai`'s types refuse (`Content`, `Tool`, `ToolConfig`, `SafetySetting`,
`GenerationConfig`: pydantic models with camelCase aliases that forbid unknown keys), and a
conversation that does not hold together (a function response must answer the function call turn
right before it, part for part).

The SDK's types also carry a few Vertex-only or SDK-side fields; the real API refuses some of those,
the fake takes them (it never refuses a body the SDK would send). Without `google-genai` installed
only the structural checks apply.
"""

from __future__ import annotations

import functools
from typing import Any

from sidegate.fakes.wire_gemini import get, signs_calls

__all__ = ["embed_problem", "generate_problem"]

# GenerateContentRequest's fields (the `model` field is optional in the body; `labels` is Vertex's).
_GENERATE_FIELDS = frozenset(
    {"contents", "systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config",
     "safetySettings", "safety_settings", "generationConfig", "generation_config", "cachedContent",
     "cached_content", "model", "labels"}
)  # fmt: skip
_EMBED_FIELDS = frozenset(
    {"model", "content", "taskType", "task_type", "title", "outputDimensionality", "output_dimensionality"}
)
_TASK_TYPES = frozenset(
    {"TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION",
     "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY"}
)  # fmt: skip
_ROLES = ("user", "model")


@functools.cache
def _adapters() -> dict[str, tuple[Any, bool]]:
    """Field -> (validator, is a list), built once per process."""
    try:
        from google.genai import types
        from pydantic import TypeAdapter
    except ImportError:  # google-genai is a test extra
        return {}
    one = {
        "systemInstruction": types.Content,
        "toolConfig": types.ToolConfig,
        "generationConfig": types.GenerationConfig,
    }
    many = {"contents": types.Content, "tools": types.Tool, "safetySettings": types.SafetySetting}
    out: dict[str, tuple[Any, bool]] = {k: (TypeAdapter(v), False) for k, v in one.items()}
    out.update({k: (TypeAdapter(v), True) for k, v in many.items()})
    out["content"] = out["systemInstruction"]
    return out


def warm_up() -> None:
    """Build the validators now (google-genai's models defer building theirs to the first use)."""
    part = {"text": "x"}
    generate_problem(
        {
            "contents": [{"role": "user", "parts": [part]}],
            "systemInstruction": {"parts": [part]},
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "generationConfig": {"maxOutputTokens": 1},
        },
        vertex=False,
    )


def _unknown(name: str, where: str = "") -> str:
    at = f" at '{where}'" if where else ""
    return f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _typed(field: str, value: Any) -> str | None:
    found = _adapters().get(field)
    if found is None:
        return None
    from pydantic import ValidationError

    adapter, many = found
    if many and not isinstance(value, list):
        return f"Invalid value at '{field}' (type.googleapis.com/google.ai.generativelanguage.v1beta.{field}), Starting an object on a scalar field"
    items = list(enumerate(value)) if many else [(None, value)]
    for i, item in items:
        try:
            adapter.validate_python(item)
        except ValidationError as e:
            err = max(e.errors(include_url=False), key=lambda x: len(x["loc"]))
            prefix = field if i is None else f"{field}[{i}]"
            if err["type"] == "extra_forbidden":
                *where, name = err["loc"]
                return _unknown(str(name), _loc(prefix, tuple(where)))
            return f"Invalid value at '{_loc(prefix, err['loc'])}': {err['msg']}"
    return None


def generate_problem(body: dict[str, Any], vertex: bool, model: str = "") -> str | None:
    """The 400 message Gemini gives a `generateContent` / `streamGenerateContent` / `countTokens`
    body, or None (`model`: the one that answers, whose own rules apply; none for a count)."""
    for key in body:
        if key not in _GENERATE_FIELDS or (key == "labels" and not vertex):
            return _unknown(key)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    for field in (
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "safetySettings",
        "generationConfig",
    ):
        value = get(body, field)
        if value is not None:
            problem = _typed(field, value)
            if problem:
                return problem
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or not content.get("parts"):
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
        if content.get("role", "user") not in _ROLES:
            return "Please use a valid role: user, model."
    return _pairing(contents) or (_signatures(contents) if signs_calls(model) else None)


def _signatures(contents: list[Any]) -> str | None:
    """Gemini 3: in the current turn (from the last user text on), the first function call part of
    each model step carries its `thoughtSignature` (a client or gateway that drops it gets a 400;
    Google documents `skip_thought_signature_validator` for calls it did not make)."""
    start = 0
    for i, content in enumerate(contents):
        parts = content.get("parts") or []
        if content.get("role", "user") == "user" and any(isinstance(p, dict) and "text" in p for p in parts):
            start = i
    for i in range(start, len(contents)):
        parts = contents[i].get("parts") or []
        calls = [p for p in parts if isinstance(p, dict) and isinstance(get(p, "functionCall"), dict)]
        if calls and not get(calls[0], "thoughtSignature"):
            name = get(calls[0], "functionCall").get("name")
            return (
                "Function call is missing a thought_signature in functionCall parts. This is required for "
                "tools to work correctly, and missing thought_signature may lead to degraded model "
                f"performance. Additional data, function call `default_api:{name}` , position {i + 1}. "
                "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
    return None


def _names(content: Any, kind: str) -> list[str]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [str(get(p, kind).get("name")) for p in parts or [] if isinstance(get(p, kind), dict)]


def _pairing(contents: list[Any]) -> str | None:
    """Gemini's turn rules for function calling: a function call turn comes right after a user turn
    or a function response turn; a function response turn comes right after a function call turn
    and answers each of its calls (same count, same names)."""
    for i, content in enumerate(contents):
        responses = _names(content, "functionResponse")
        calls_before = _names(contents[i - 1], "functionCall") if i else []
        if responses:
            if not calls_before:
                return (
                    "Please ensure that function response turn comes immediately after a function call turn."
                )
            if len(responses) != len(calls_before):
                return (
                    "Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn."
                )
            if sorted(responses) != sorted(calls_before):
                return (
                    "Please ensure that each function response part answers a function call part of the "
                    f"function call turn (by name): got {', '.join(sorted(responses))}."
                )
        if _names(content, "functionCall") and i and contents[i - 1].get("role") == "model":
            return (
                "Please ensure that function call turn comes immediately after a user turn or after a "
                "function response turn."
            )
    return None


def embed_problem(request: Any, model: str, at: str = "") -> str | None:
    """An `embedContent` body (or one of `batchEmbedContents`' requests, `at` its place): known
    fields, a text `content`, a task type Gemini knows, and in a batch the model of the URL."""
    if not isinstance(request, dict):
        return f"Invalid value at '{at or 'request'}': Starting an object on a scalar field"
    for key in request:
        if key not in _EMBED_FIELDS:
            return _unknown(key, at)
    if at and request.get("model") != f"models/{model}":
        return (
            f"Model names should be the same as the model of the batch request: {at}.model is "
            f"{request.get('model')!r}, the batch's is 'models/{model}'."
        )
    content = request.get("content")
    if not isinstance(content, dict) or not content.get("parts"):
        return f"* BatchEmbedContentsRequest.{at or 'content'}: content must contain parts\n"
    problem = _typed("content", content)
    if problem:
        return problem
    task = request.get("taskType", request.get("task_type"))
    if task is not None and task not in _TASK_TYPES:
        return f"Invalid value at '{at + '.' if at else ''}task_type' (type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType), \"{task}\""
    dims = get(request, "outputDimensionality")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        return f"Invalid value at '{at + '.' if at else ''}output_dimensionality' (TYPE_INT32), {dims!r}"
    return None


def batch_problem(body: dict[str, Any], model: str) -> str | None:
    for key in body:
        if key != "requests":
            return _unknown(key)
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return "* BatchEmbedContentsRequest.requests: requests is not specified\n"
    if len(requests) > 100:
        return "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n"
    for i, r in enumerate(requests):
        problem = embed_problem(r, model, f"requests[{i}]")
        if problem:
            return problem
    return None

"""What a Gemini API client may send to a provider of another API: the parameter policy (mapped,
dropped, refused unless at its no-op value) and Google's OpenAPI-subset ``Schema`` read as JSON
Schema. Mapping table: docs/translation.md, "Gemini API".

The decoder runs only when the provider speaks another API (Gemini to Gemini is the passthrough in
``gemini_gemini.py``), so what cannot reach another API is refused as it is decoded and
``check_extras`` has nothing left to check.
"""

from __future__ import annotations

from typing import Any

from sidegate.translate.common import bad_param

__all__ = [
    "CONFIG_MAPPED",
    "CONFIG_NOOP",
    "DROPPED",
    "MAPPED",
    "REFUSED",
    "camel_keys",
    "check_config",
    "check_extras",
    "check_top_level",
    "json_schema",
]

# Top-level fields the form has a place for.
MAPPED = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"})
# Fields that only steer Google's own servers: accepted and not forwarded. ``safetySettings``
# tunes Google's harm filters; another provider applies its own moderation and has no such
# thresholds, so the answer means the same without them (a block there still reaches the client
# as a content-filter finish). ``labels`` are Vertex billing labels.
DROPPED = frozenset({"safetySettings", "labels"})
# Fields another provider cannot honour without changing what the answer means.
REFUSED = {
    "cachedContent": "the cached content lives on Google's servers; send the content itself instead",
}
# generationConfig fields the form has a place for.
CONFIG_MAPPED = frozenset(
    {
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "thinkingConfig",
    }
)
# generationConfig fields accepted only at the value that changes nothing.
CONFIG_NOOP: dict[str, tuple[Any, ...]] = {
    "candidateCount": (None, 1),
    "presencePenalty": (None, 0, 0.0),
    "frequencyPenalty": (None, 0, 0.0),
    "seed": (None,),
    "responseLogprobs": (None, False),
    "logprobs": (None, 0),
    "responseModalities": (None, [], ["TEXT"], ["text"]),
    "mediaResolution": (None, "MEDIA_RESOLUTION_UNSPECIFIED"),
    "speechConfig": (None,),
    "audioTimestamp": (None, False),
    "enableEnhancedCivicAnswers": (None, False),
    "enableAffectiveDialog": (None, False),
    "routingConfig": (None,),
    "modelSelectionConfig": (None,),
    "imageConfig": (None,),
}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def camel_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with snake_case keys in camelCase. Google's API reads both spellings (proto JSON),
    and google-genai sends both (``inlineData: {mime_type}``, ``thinkingConfig: {thinking_budget}``,
    ``parameters_json_schema``): the decoder reads one. Only for the API's own objects, never for
    a client's data (a schema, function arguments or results keep their keys)."""
    if "_" not in "".join(obj):  # one C-level pass over the keys (JSON keys are strings)
        return obj
    return {(_camel(k) if "_" in k else k): v for k, v in obj.items()}


def check_extras(extras: dict[str, Any]) -> None:
    """The form's ``check_extras`` for Gemini clients: the decoder refused what had to be refused."""


def check_top_level(body: dict[str, Any]) -> None:
    for key, value in body.items():
        if key in MAPPED or key in DROPPED or value is None:
            continue
        reason = REFUSED.get(key)
        tail = f": {reason}." if reason else "."
        raise bad_param(key, f"Parameter {key!r} is not supported for this model{tail}")


def check_config(config: dict[str, Any]) -> None:
    for key, value in config.items():
        if key in CONFIG_MAPPED:
            continue
        allowed = CONFIG_NOOP.get(key)
        param = f"generationConfig.{key}"
        if allowed is None:
            raise bad_param(param, f"Parameter {param!r} is not supported for this model.")
        if value not in allowed:
            raise bad_param(
                param, f"Parameter {param!r} is not supported for this model (only its default value is)."
            )


# Google's Schema keywords that JSON Schema spells the same (``type`` and ``nullable`` are converted).
_SAME = frozenset(
    {
        "format",
        "title",
        "description",
        "enum",
        "maxItems",
        "minItems",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "default",
        "minimum",
        "maximum",
    }
)


def json_schema(schema: Any, param: str, depth: int = 0) -> dict[str, Any]:
    """Google's OpenAPI-subset ``Schema`` (``parameters``, ``responseSchema``: upper-case types,
    ``nullable``, ``propertyOrdering``) -> JSON Schema, which every other API takes."""
    if not isinstance(schema, dict):
        raise bad_param(param, "a schema must be an object.")
    if depth > 64:
        raise bad_param(param, "the schema is nested too deeply.")
    schema = camel_keys(schema)  # its keywords (any_of, max_items...), not the property names
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if kind is not None and kind != "TYPE_UNSPECIFIED":
        if not isinstance(kind, str):
            raise bad_param(param, "a schema type must be a string.")
        out["type"] = [kind.lower(), "null"] if schema.get("nullable") is True else kind.lower()
    for key, value in schema.items():
        if key in _SAME:
            out[key] = value
        elif key == "properties":
            if not isinstance(value, dict):
                raise bad_param(param, "schema properties must be an object.")
            out["properties"] = {k: json_schema(v, param, depth + 1) for k, v in value.items()}
        elif key == "items":
            out["items"] = json_schema(value, param, depth + 1)
        elif key == "anyOf":
            if not isinstance(value, list):
                raise bad_param(param, "schema anyOf must be a list.")
            out["anyOf"] = [json_schema(v, param, depth + 1) for v in value]
        elif key == "example":
            out["examples"] = [value]
        # type, nullable: above; propertyOrdering only orders Gemini's own output
    return out

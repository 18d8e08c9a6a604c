"""Structured output for the fakes: the smallest JSON value that fits a request's JSON schema.

A real model asked for `json_schema` output answers JSON matching the schema; the fake answers a
deterministic minimal instance, so a client's `parse()` (pydantic, zod...) succeeds through the gateway.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["requested_schema", "schema_instance", "structured_text"]

_MAX_DEPTH = 12  # a recursive schema ($ref to itself) stops here with its smallest value


def requested_schema(body: dict[str, Any]) -> tuple[str, Any] | None:
    """(kind, schema) the request asks its answer to follow: ("json_schema", schema) or ("json_object", None).

    Read from chat's `response_format`, the Responses API's `text.format` and Anthropic's
    `output_config.format`; None for plain text."""
    fmt: Any = body.get("response_format")
    if isinstance(fmt, dict):
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
    else:
        text, config = body.get("text"), body.get("output_config")
        fmt = text.get("format") if isinstance(text, dict) else None
        if not isinstance(fmt, dict) and isinstance(config, dict):
            fmt = config.get("format")
        if not isinstance(fmt, dict):
            return None
        schema = fmt.get("schema")
    kind = fmt.get("type")
    if kind == "json_schema" and isinstance(schema, dict):
        return "json_schema", schema
    if kind == "json_object":
        return "json_object", None
    return None


def structured_text(body: dict[str, Any], plain: str) -> str | None:
    """The answer text for a structured-output request (None: the request wants plain text).

    `json_object` wraps the plain answer as ``{"text": plain}`` so the echo stays visible."""
    wanted = requested_schema(body)
    if wanted is None:
        return None
    kind, schema = wanted
    value = schema_instance(schema) if kind == "json_schema" else {"text": plain}
    return orjson.dumps(value).decode()


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        if not part:
            continue
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node


def schema_instance(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A minimal value valid for `schema`: every required property (all of them when none are listed,
    as strict schemas list them all), enums' first value, arrays of `minItems` elements."""
    root = root if root is not None else schema if isinstance(schema, dict) else {}
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if isinstance(schema.get("$ref"), str):
        return schema_instance(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            # Prefer a non-null branch: `Optional[X]` fields then carry a real value.
            chosen = next((o for o in options if isinstance(o, dict) and o.get("type") != "null"), options[0])
            return schema_instance(chosen, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = schema_instance(part, root, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
            else:
                return value
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string" if not schema else None
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required")
        names = [n for n in required if n in props] if isinstance(required, list) else list(props)
        return {name: schema_instance(props[name], root, depth + 1) for name in names}
    if kind == "array":
        count = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 0
        return [schema_instance(schema.get("items"), root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return _number(schema, 0)
    if kind == "number":
        return _number(schema, 0.0)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string":
        return _string(schema)
    return None


def _number(schema: dict[str, Any], zero: int | float) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(low, int | float) and low > zero:
        return type(zero)(low) + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(high, int | float) and high < zero:
        return type(zero)(high) - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return zero


_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "fake@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "duration": "P1D",
}


def _string(schema: dict[str, Any]) -> str:
    value = _FORMATS.get(str(schema.get("format")), "fake")
    low = schema.get("minLength")
    if isinstance(low, int) and len(value) < low:
        value = value + "x" * (low - len(value))
    high = schema.get("maxLength")
    if isinstance(high, int) and len(value) > high:
        value = value[:high]
    return value

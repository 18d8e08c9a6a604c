"""The building blocks every part of the admin API's OpenAPI document uses (:mod:`sidegate.admin.openapi`
and its ``openapi_*`` parts): schema references, JSON answers and bodies, parameters, and one operation
builder, so every operation carries the same common error answers. Imports nothing of the admin API
but the control plane's patterns (the parts import it; it imports none of them)."""

from __future__ import annotations

from typing import Any

from sidegate.admin import controlplane as cp


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_answer(description: str) -> dict[str, Any]:
    return json_answer(ref("Error"), description)


def json_body(name: str, required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": ref(name)}}}


def query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


COMMON_ANSWERS = {
    "400": error_answer("Invalid input"),
    "401": error_answer("Missing, wrong, revoked or expired admin token"),
    "403": error_answer("The caller's role may not do this (on this tenant)"),
    "default": error_answer("Error"),
}


def operation(op_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One operation: its own answers plus :data:`COMMON_ANSWERS`; ``extra``: parameters, requestBody."""
    return {"operationId": op_id, "summary": summary, "responses": {**responses, **COMMON_ANSWERS}, **extra}


TENANT_PATH = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": cp.TENANT_PATTERN},
}
"""The ``{name}`` path parameter of ``/tenants/{name}...``."""
NULLABLE_TIME = {"type": ["number", "null"], "description": "Unix time in seconds; null = none."}

"""The OpenAPI part of the team and user endpoints (:mod:`sidegate.admin.api_org`), merged into the
admin API's document by :func:`sidegate.admin.openapi.spec`, which passes its path prefix."""

from __future__ import annotations

from typing import Any

from sidegate.admin import controlplane as cp
from sidegate.admin.openapi_parts import TENANT_PATH as _TENANT
from sidegate.admin.openapi_parts import error_answer as _err
from sidegate.admin.openapi_parts import json_answer as _json
from sidegate.admin.openapi_parts import json_body as _body
from sidegate.admin.openapi_parts import operation as _op
from sidegate.admin.openapi_parts import ref as _ref

_MODELS = {
    "type": "array",
    "minItems": 1,
    "maxItems": cp.MAX_MODELS,
    "items": {"type": "string", "pattern": cp.MODEL_PATTERN},
    "default": ["*"],
    "description": "Client model names allowed; `*` = every model. A request may use a model only if "
    "its key's, its team's and its user's lists all allow it.",
}
_NAME = {"type": "string", "pattern": cp.MEMBER_PATTERN}

ORG_SCHEMAS: dict[str, Any] = {
    "Team": {
        "type": "object",
        "required": ["tenant", "team", "limits", "models", "users", "active_keys"],
        "properties": {
            "tenant": {"type": "string"},
            "team": _NAME,
            "limits": _ref("Limits"),
            "models": {"type": "array", "items": {"type": "string"}},
            "users": {"type": "array", "items": {"type": "string"}, "description": "The team's users."},
            "active_keys": {
                "type": "integer",
                "minimum": 0,
                "description": "Usable keys of the team itself (its users' keys count with them).",
            },
        },
    },
    "TeamPut": {
        "type": "object",
        "additionalProperties": False,
        "description": "The whole team: a field left out takes its default (no limits, every model).",
        "properties": {"limits": _ref("Limits"), "models": _MODELS},
    },
    "TeamList": {
        "type": "object",
        "required": ["teams"],
        "properties": {"teams": {"type": "array", "items": _ref("Team")}},
    },
    "User": {
        "type": "object",
        "required": ["tenant", "user", "team", "limits", "models", "active_keys"],
        "properties": {
            "tenant": {"type": "string"},
            "user": _NAME,
            "team": {"type": ["string", "null"]},
            "limits": _ref("Limits"),
            "models": {"type": "array", "items": {"type": "string"}},
            "active_keys": {"type": "integer", "minimum": 0},
        },
    },
    "UserPut": {
        "type": "object",
        "additionalProperties": False,
        "description": "The whole user: a field left out takes its default (no team, no limits, every model).",
        "properties": {
            "team": {
                "type": ["string", "null"],
                "pattern": cp.MEMBER_PATTERN,
                "description": "A team of the same tenant; the user's keys follow it. null = none.",
            },
            "limits": _ref("Limits"),
            "models": _MODELS,
        },
    },
    "UserList": {
        "type": "object",
        "required": ["users"],
        "properties": {"users": {"type": "array", "items": _ref("User")}},
    },
}
for _kind in ("team", "user"):
    ORG_SCHEMAS[f"{_kind.capitalize()}Deleted"] = {
        "type": "object",
        "required": ["tenant", _kind, "existed", "revoked_keys"],
        "properties": {
            "tenant": {"type": "string"},
            _kind: {"type": "string"},
            "existed": {
                "type": "boolean",
                "description": f"False: there was no such {_kind} (nothing done).",
            },
            "revoked_keys": {
                "type": "integer",
                "minimum": 0,
                "description": "Keys of the deleted one, revoked.",
            },
        },
    }


def _member(param: str) -> dict[str, Any]:
    return {"name": param, "in": "path", "required": True, "schema": _NAME}


def _links(*op_ids: str, member: str | None = None) -> dict[str, Any]:
    """Links from a PUT's answer to the operations on what it made (the path's names), for clients
    and for the stateful tests that walk them."""
    params = {"name": "$request.path.name", **({member: f"$request.path.{member}"} if member else {})}
    return {op: {"operationId": op, "parameters": params} for op in op_ids}


def _crud(kind: str, param: str, conflict: str | None) -> dict[str, Any]:
    """GET/PUT/DELETE of one team or user."""
    title = kind.capitalize()
    params = [_TENANT, _member(param)]
    links = _links(f"get{title}", f"delete{title}", member=param)
    created = {**_json(_ref(title), "Created"), "links": links}
    missing = _err(f"No such tenant or {kind}")
    delete_answers: dict[str, Any] = {
        "200": _json(_ref(f"{title}Deleted"), f"Deleted, or there was no such {kind}")
    }
    if conflict:
        delete_answers["409"] = _err(conflict)
    return {
        "get": _op(f"get{title}", f"One {kind}", {"200": _json(_ref(title), f"The {kind}"), "404": missing},
                   parameters=params),
        "put": _op(
            f"put{title}",
            f"Create or replace a {kind}: its limits and model allow-list",
            {"200": _json(_ref(title), "Replaced"), "201": created,
             "404": _err("No such tenant")},
            parameters=params,
            requestBody=_body(f"{title}Put", False),
        ),
        "delete": _op(f"delete{title}", f"Delete a {kind} and revoke its keys (idempotent)", delete_answers,
                      parameters=params),
    }  # fmt: skip


def org_paths(prefix: str) -> dict[str, Any]:
    base = f"{prefix}/tenants/{{name}}"
    return {
        f"{base}/teams": {
            "get": _op(
                "listTeams",
                "A tenant's teams",
                {"200": _json(_ref("TeamList"), "Teams by name"), "404": _err("No such tenant")},
                parameters=[_TENANT],
            ),
        },
        f"{base}/teams/{{team}}": _crud("team", "team", "The team still has users"),
        f"{base}/users": {
            "get": _op(
                "listUsers",
                "A tenant's users",
                {"200": _json(_ref("UserList"), "Users by name"), "404": _err("No such tenant")},
                parameters=[_TENANT],
            ),
        },
        f"{base}/users/{{user}}": _crud("user", "user", None),
    }

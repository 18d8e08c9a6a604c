"""The admin API's OpenAPI 3.1 document, built from the same limits the control plane enforces.

``python -m sidegate.admin.openapi > docs/admin-openapi.json`` regenerates the committed copy.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from sidegate.admin import controlplane as cp
from sidegate.admin import openapi_roles, openapi_routing
from sidegate.admin.openapi_org import ORG_SCHEMAS, org_paths
from sidegate.admin.openapi_parts import NULLABLE_TIME as _NULLABLE_TIME
from sidegate.admin.openapi_parts import TENANT_PATH as _TENANT
from sidegate.admin.openapi_parts import error_answer as _err
from sidegate.admin.openapi_parts import json_answer as _json
from sidegate.admin.openapi_parts import json_body as _body
from sidegate.admin.openapi_parts import operation as _op
from sidegate.admin.openapi_parts import ref as _ref
from sidegate.admin.openapi_usage import USAGE_SCHEMAS, usage_paths

PREFIX = "/admin/v1"


_EXPIRES_AT = {
    "type": ["number", "null"],
    "exclusiveMinimum": 0,
    "maximum": int(cp.MAX_EXPIRES_AT),
    "description": "Unix time (s) after which the key is refused; null = never. A past time makes an expired key.",
}
_KEY_STRING = {
    "type": "string",
    "pattern": r"^sgk_[a-z0-9]{8}_[A-Za-z0-9_-]{20,128}$",
    "description": "The plaintext key. Shown once: it is not stored (only its hash is).",
}


def _limit(kind: str, what: str) -> dict[str, Any]:
    return {
        "type": [kind, "null"],
        "minimum": 0,
        "maximum": int(cp.MAX_LIMIT),
        "description": f"{what}; null = unlimited.",
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Limits": {
        "type": "object",
        "additionalProperties": False,
        "description": "A tenant's limits, stored as the fields of the `sg:tenant:<name>` hash. "
        "On PUT, the whole set is replaced: a field left out or null becomes unlimited.",
        "properties": {
            "rpm": _limit("integer", "Requests per minute"),
            "tpm": _limit("integer", "Tokens (prompt + completion) per minute"),
            "daily_usd": _limit("number", "Spend per UTC day, in US dollars"),
            "monthly_usd": _limit("number", "Spend per UTC calendar month, in US dollars"),
        },
    },
    "Key": {
        "type": "object",
        "description": "A key record as shown: never its hash or secret.",
        "required": ["id", "tenant", "models", "revoked", "expires_at", "created_at", "revoked_at", "status"],
        "properties": {
            "id": {"type": "string", "pattern": cp.KEY_ID_PATTERN},
            "tenant": {"type": "string"},
            "models": {"type": "array", "items": {"type": "string"}},
            "revoked": {"type": "boolean"},
            "expires_at": _NULLABLE_TIME,
            "created_at": _NULLABLE_TIME,
            "revoked_at": _NULLABLE_TIME,
            "status": {"type": "string", "enum": ["active", "revoked", "expired"]},
            "team": {"type": ["string", "null"], "description": "The team the key belongs to; null = none."},
            "user": {
                "type": ["string", "null"],
                "description": "The user the key belongs to (and so the user's team).",
            },
        },
    },
    "KeyCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["tenant"],
        "properties": {
            "tenant": {
                "type": "string",
                "pattern": cp.TENANT_PATTERN,
                "description": "Tenant the key belongs to; registered if new.",
            },
            "models": {
                "type": "array",
                "minItems": 1,
                "maxItems": cp.MAX_MODELS,
                "items": {"type": "string", "pattern": cp.MODEL_PATTERN},
                "default": ["*"],
                "description": "Client model names the key may use; `*` = every model.",
            },
            "expires_at": _EXPIRES_AT,
            "team": {
                "type": ["string", "null"],
                "pattern": cp.MEMBER_PATTERN,
                "description": "A team of the tenant the key belongs to (its limits and allow-list apply).",
            },
            "user": {
                "type": ["string", "null"],
                "pattern": cp.MEMBER_PATTERN,
                "description": "A user of the tenant the key belongs to (with the user's team, if any; "
                "naming both requires the user to be in that team).",
            },
        },
    },
    "KeyRotate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "overlap_s": {
                "type": "number",
                "minimum": 0,
                "maximum": cp.MAX_OVERLAP_S,
                "default": cp.DEFAULT_OVERLAP_S,
                "description": "Seconds the old key stays valid (an earlier expiry is kept).",
            },
            "expires_at": _EXPIRES_AT,
        },
    },
    "KeyCreated": {
        "type": "object",
        "required": ["key", "record"],
        "properties": {"key": _KEY_STRING, "record": _ref("Key")},
    },
    "KeyRotated": {
        "type": "object",
        "required": ["key", "record", "previous"],
        "properties": {"key": _KEY_STRING, "record": _ref("Key"), "previous": _ref("Key")},
    },
    "KeyList": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": _ref("Key")}},
    },
    "Tenant": {
        "type": "object",
        "required": ["name", "limits", "active_keys"],
        "properties": {
            "name": {"type": "string", "pattern": cp.TENANT_PATTERN},
            "limits": _ref("Limits"),
            "active_keys": {"type": "integer", "minimum": 0},
        },
    },
    "TenantPut": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"limits": _ref("Limits")},
    },
    "TenantList": {
        "type": "object",
        "required": ["tenants"],
        "properties": {"tenants": {"type": "array", "items": _ref("Tenant")}},
    },
    "TenantDeleted": {
        "type": "object",
        "required": ["name", "revoked_keys"],
        "properties": {"name": {"type": "string"}, "revoked_keys": {"type": "integer", "minimum": 0}},
    },
    **USAGE_SCHEMAS,
    "Health": {
        "type": "object",
        "required": ["status", "store"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "store": {"type": "string"},
        },
    },
}

_KEY_ID = {
    "name": "key_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": cp.KEY_ID_PATTERN},
}


def spec() -> dict[str, Any]:
    doc = _core_spec()
    doc["paths"].update(openapi_roles.paths(PREFIX))
    doc["paths"].update(openapi_routing.paths(PREFIX))
    doc["components"]["schemas"].update(openapi_routing.SCHEMAS)
    return doc


def _core_spec() -> dict[str, Any]:
    public: dict[str, Any] = {"security": []}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sidegate admin API",
            "version": "1",
            "description": "Manage tenants, their teams and users, their limits and API keys live in the "
            "Sidegate store. "
            "Every change bumps a version counter that the gateway replicas poll, so it applies within a second. "
            "Callers have a role (owner, tenant_admin of one tenant, viewer of one or every tenant): a "
            "request the role may not make is answered 403. Every change is recorded in the audit log.",
        },
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "SIDEGATE_ADMIN_TOKEN (the bootstrap owner), a stored admin token "
                    "(`sga_...`: owner, tenant_admin or viewer), or, when configured, a JWT from the "
                    "admin OIDC issuer.",
                }
            },
            "schemas": {**SCHEMAS, **ORG_SCHEMAS, **openapi_roles.SCHEMAS},
        },
        "security": [{"adminToken": []}],
        "paths": {
            f"{PREFIX}/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness and store reachability (no token needed)",
                    "responses": {
                        "200": _json(_ref("Health"), "Up, store reachable"),
                        "503": _json(_ref("Health"), "Store unreachable"),
                    },
                    **public,
                }
            },
            f"{PREFIX}/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document (no token needed)",
                    "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
                    **public,
                }
            },
            f"{PREFIX}/keys": {
                "get": _op(
                    "listKeys",
                    "List keys (never their hashes or secrets)",
                    {"200": _json(_ref("KeyList"), "Keys, oldest first")},
                    parameters=[
                        {
                            "name": "tenant",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": cp.TENANT_PATTERN},
                        }
                    ],
                ),
                "post": _op(
                    "createKey",
                    "Create a key; the plaintext key is in the response only",
                    {"201": _json(_ref("KeyCreated"), "Created")},
                    requestBody=_body("KeyCreate", True),
                ),
            },
            f"{PREFIX}/keys/{{key_id}}": {
                "get": _op(
                    "getKey",
                    "One key",
                    {"200": _json(_ref("Key"), "The key"), "404": _err("No such key")},
                    parameters=[_KEY_ID],
                ),
            },
            f"{PREFIX}/keys/{{key_id}}/revoke": {
                "post": _op(
                    "revokeKey",
                    "Revoke a key (idempotent)",
                    {"200": _json(_ref("Key"), "Revoked"), "404": _err("No such key")},
                    parameters=[_KEY_ID],
                ),
            },
            f"{PREFIX}/keys/{{key_id}}/rotate": {
                "post": _op(
                    "rotateKey",
                    "New key with the same tenant and models; the old one expires after the overlap",
                    {
                        "201": _json(_ref("KeyRotated"), "Rotated"),
                        "404": _err("No such key"),
                        "409": _err("The key is revoked"),
                    },
                    parameters=[_KEY_ID],
                    requestBody=_body("KeyRotate", False),
                ),
            },
            f"{PREFIX}/tenants": {
                "get": _op(
                    "listTenants", "List tenants", {"200": _json(_ref("TenantList"), "Tenants by name")}
                ),
            },
            f"{PREFIX}/tenants/{{name}}": {
                "get": _op(
                    "getTenant",
                    "One tenant",
                    {"200": _json(_ref("Tenant"), "The tenant"), "404": _err("No such tenant")},
                    parameters=[_TENANT],
                ),
                "put": _op(
                    "putTenant",
                    "Create a tenant (idempotent); with `limits`, also replace its limits",
                    {"200": _json(_ref("Tenant"), "Existed"), "201": _json(_ref("Tenant"), "Created")},
                    parameters=[_TENANT],
                    requestBody=_body("TenantPut", False),
                ),
                "delete": _op(
                    "deleteTenant",
                    "Delete a tenant, its limits, teams and users, and revoke its keys",
                    {"200": _json(_ref("TenantDeleted"), "Deleted"), "404": _err("No such tenant")},
                    parameters=[_TENANT],
                ),
            },
            **usage_paths(PREFIX),
            f"{PREFIX}/tenants/{{name}}/limits": {
                "put": _op(
                    "putTenantLimits",
                    "Replace a tenant's limits",
                    {"200": _json(_ref("Tenant"), "Updated"), "404": _err("No such tenant")},
                    parameters=[_TENANT],
                    requestBody=_body("Limits", True),
                ),
            },
            **org_paths(PREFIX),
        },
    }


def spec_json() -> str:
    """The committed form: sorted keys, 2-space indent, trailing newline."""
    return orjson.dumps(spec(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


if __name__ == "__main__":
    sys.stdout.write(spec_json())

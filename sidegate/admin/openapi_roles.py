"""The OpenAPI parts of admin roles: admin tokens, ``whoami`` and the audit log.

:func:`sidegate.admin.openapi.spec` merges these schemas and paths into the document.
"""

from __future__ import annotations

from typing import Any

from sidegate.admin import audit, tokens
from sidegate.admin import controlplane as cp
from sidegate.admin.openapi_parts import NULLABLE_TIME as _TIME
from sidegate.admin.openapi_parts import error_answer, json_body
from sidegate.admin.openapi_parts import json_answer as _json
from sidegate.admin.openapi_parts import operation as op
from sidegate.admin.openapi_parts import query_param as _q
from sidegate.admin.openapi_parts import ref as _ref
from sidegate.admin.principal import Role

ROLE_NAMES = [r.value for r in Role]


_TENANT = {"type": "string", "pattern": cp.TENANT_PATTERN}
_NAME = {"type": "string", "pattern": tokens.NAME_PATTERN, "description": "A label: who or what holds it."}
_EXPIRES = {
    "type": ["number", "null"],
    "exclusiveMinimum": 0,
    "maximum": int(cp.MAX_EXPIRES_AT),
    "description": "Unix time (s) after which the token is refused; null = never.",
}


def _create_variant(role: str, tenant: str) -> dict[str, Any]:
    props: dict[str, Any] = {"role": {"const": role}, "name": _NAME, "expires_at": _EXPIRES}
    required = ["role", "name"]
    if tenant == "none":
        props["tenant"] = {"type": "null"}
    elif tenant == "optional":
        props["tenant"] = {**_TENANT, "type": ["string", "null"], "description": "null = every tenant"}
    else:
        props["tenant"] = _TENANT
        required.append("tenant")
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


SCHEMAS: dict[str, Any] = {
    "AdminToken": {
        "type": "object",
        "description": "An admin token as shown: never its hash or secret.",
        "required": [
            "id",
            "name",
            "role",
            "tenant",
            "created_at",
            "expires_at",
            "revoked",
            "revoked_at",
            "created_by",
            "status",
        ],
        "properties": {
            "id": {"type": "string", "pattern": tokens.TOKEN_ID_PATTERN},
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ROLE_NAMES},
            "tenant": {"type": ["string", "null"], "description": "null = every tenant"},
            "created_at": _TIME,
            "expires_at": _TIME,
            "revoked": {"type": "boolean"},
            "revoked_at": _TIME,
            "created_by": {"type": "string", "description": "The principal that created it."},
            "status": {"type": "string", "enum": ["active", "revoked", "expired"]},
        },
    },
    "AdminTokenCreate": {
        "description": "An owner token has no tenant; a tenant_admin token needs one; a viewer token "
        "without one sees every tenant. A tenant_admin may create viewer tokens of its own tenant only.",
        "examples": [{"role": "viewer", "tenant": "acme", "name": "acme dashboards"}],
        "oneOf": [
            _create_variant("owner", "none"),
            _create_variant("tenant_admin", "required"),
            _create_variant("viewer", "optional"),
        ],
    },
    "AdminTokenCreated": {
        "type": "object",
        "required": ["token", "record"],
        "properties": {
            "token": {
                "type": "string",
                "pattern": tokens.TOKEN_PATTERN,
                "description": "The plaintext token. Shown once: only its hash is stored.",
            },
            "record": _ref("AdminToken"),
        },
    },
    "AdminTokenList": {
        "type": "object",
        "required": ["tokens"],
        "properties": {"tokens": {"type": "array", "items": _ref("AdminToken")}},
    },
    "Whoami": {
        "type": "object",
        "required": ["id", "role", "tenant"],
        "properties": {
            "id": {"type": "string", "description": "env, token:<id>, oidc:<sub>"},
            "role": {"type": "string", "enum": ROLE_NAMES},
            "tenant": {"type": ["string", "null"]},
        },
    },
    "AuditEntry": {
        "type": "object",
        "required": ["id", "ts", "actor", "role", "source", "action", "target", "tenant", "before", "after"],
        "properties": {
            "id": {"type": "string", "description": "The entry's stream id."},
            "ts": {"type": "number", "description": "Unix time (s) of the change."},
            "actor": {"type": "string", "description": "env, token:<id>, oidc:<sub>, cli:<user>"},
            "role": {"type": "string"},
            "source": {"type": "string", "description": "The client address, or `local` for the CLI."},
            "action": {"type": "string", "description": "e.g. key.create, tenant.limits, admin_token.revoke"},
            "target": {"type": "string", "description": "e.g. key:<id>, tenant:<name>"},
            "tenant": {
                "type": ["string", "null"],
                "description": "The tenant concerned; null = none in particular.",
            },
            "before": {
                "description": "The thing before the change (null when created); never a secret or hash."
            },
            "after": {"description": "The thing after the change."},
        },
    },
    "AuditPage": {
        "type": "object",
        "required": ["entries", "more"],
        "properties": {
            "entries": {"type": "array", "items": _ref("AuditEntry")},
            "more": {
                "type": "boolean",
                "description": "Older matches may remain: narrow `until` or raise `limit`.",
            },
        },
    },
}

_TOKEN_ID = {
    "name": "token_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": tokens.TOKEN_ID_PATTERN},
}


_WHEN = {"type": "number", "minimum": 0, "maximum": int(cp.MAX_EXPIRES_AT)}


def paths(prefix: str) -> dict[str, Any]:
    not_found = error_answer("No such admin token")
    return {
        f"{prefix}/whoami": {
            "get": op(
                "whoami", "The caller's principal: id, role and tenant", {"200": _json(_ref("Whoami"), "Who")}
            ),
        },
        f"{prefix}/admin-tokens": {
            "get": op(
                "listAdminTokens",
                "List admin tokens (never their hashes or secrets); a tenant_admin sees its tenant's",
                {"200": _json(_ref("AdminTokenList"), "Tokens, oldest first")},
                parameters=[_q("tenant", _TENANT, "Only this tenant's tokens")],
            ),
            "post": op(
                "createAdminToken",
                "Create an admin token; the plaintext token is in the response only",
                {"201": _json(_ref("AdminTokenCreated"), "Created")},
                requestBody=json_body("AdminTokenCreate", True),
            ),
        },
        f"{prefix}/admin-tokens/{{token_id}}": {
            "get": op(
                "getAdminToken",
                "One admin token",
                {"200": _json(_ref("AdminToken"), "The token"), "404": not_found},
                parameters=[_TOKEN_ID],
            ),
        },
        f"{prefix}/admin-tokens/{{token_id}}/revoke": {
            "post": op(
                "revokeAdminToken",
                "Revoke an admin token (idempotent); its next request is refused",
                {"200": _json(_ref("AdminToken"), "Revoked"), "404": not_found},
                parameters=[_TOKEN_ID],
            ),
        },
        f"{prefix}/audit": {
            "get": op(
                "getAudit",
                "Audit log entries, newest first (a scoped role sees its tenant's entries)",
                {"200": _json(_ref("AuditPage"), "Entries")},
                parameters=[
                    _q("since", _WHEN, "Unix time (s): entries at or after"),
                    _q("until", _WHEN, "Unix time (s): entries at or before"),
                    _q("tenant", _TENANT, "Only this tenant's entries"),
                    _q("actor", {"type": "string", "maxLength": 200}, "e.g. env, token:<id>, oidc:<sub>"),
                    _q(
                        "action",
                        {"type": "string", "maxLength": 100},
                        "An action (key.create) or a kind (key.)",
                    ),
                    _q(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": audit.MAX_QUERY_LIMIT, "default": 100},
                        "At most this many entries",
                    ),
                ],
            ),
        },
    }

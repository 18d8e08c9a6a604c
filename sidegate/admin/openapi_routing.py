"""The OpenAPI part of the routing endpoints (:mod:`sidegate.admin.api_routing`), merged into the
admin API's document by :func:`sidegate.admin.openapi.spec`, which passes its path prefix.

Models and providers are described, not restated: their full rules are the config file's
(sidegate/config/providers.py), checked as part of the whole configuration, so a body this schema accepts
may still be refused with its problems (400 ``invalid_config``)."""

from __future__ import annotations

from typing import Any

from sidegate.admin.controlplane.routing import MAX_INT, MODEL_NAME_PATTERN, PROVIDER_NAME_PATTERN
from sidegate.admin.openapi_parts import error_answer as _err
from sidegate.admin.openapi_parts import json_answer as _json
from sidegate.admin.openapi_parts import json_body as _body
from sidegate.admin.openapi_parts import operation as _op
from sidegate.admin.openapi_parts import query_param as _q
from sidegate.admin.openapi_parts import ref as _ref
from sidegate.errors import Api
from sidegate.routingstore import KEEP

_VERSION = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_INT,
    "description": "The routing document's version (0: never seeded).",
}
_EXAMPLE_DOC = {
    "providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
    "models": {"m": {"routes": [{"provider": "p"}]}},
}
_NUM = {"type": "number", "minimum": 0}
_NULLABLE_NUM = {"type": ["number", "null"], "minimum": 0}


def _table(item: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": _ref(item)}


SCHEMAS: dict[str, Any] = {
    "Provider": {
        "type": "object",
        "description": "A provider as in the config file's `providers.<name>` (sidegate/config/providers.py). "
        "Credentials by reference only (`api_key_env`, `api_key_envs`, `vertex`, `google`, `aws`, "
        "`azure`): an inline secret is refused.",
        "required": ["api", "base_url"],
        "properties": {
            "api": {"type": "string", "enum": [a.value for a in Api]},
            "base_url": {"type": "string"},
            "api_key_env": {"type": "string"},
        },
        "examples": [
            {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"}
        ],
    },
    "Model": {
        "type": "object",
        "description": "A model as in the config file's `models.<name>`: its route chain (providers, "
        "weights), retry and timeout policy, routing policy, cache and guard policies.",
        "required": ["routes"],
        "properties": {
            "routes": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["provider"],
                    "properties": {
                        "provider": {"type": "string", "description": "A provider of the document."},
                        "model": {"type": ["string", "null"], "description": "The provider's model name."},
                        "weight": {"type": "integer", "minimum": 0, "maximum": 1000},
                    },
                },
            }
        },
        "examples": [{"routes": [{"provider": "p"}]}],
    },
    "Price": {
        "type": "object",
        "additionalProperties": False,
        "required": ["input_per_mtok", "output_per_mtok"],
        "description": "USD per million tokens (cached reads and cache writes default to the input price).",
        "properties": {
            "input_per_mtok": _NUM,
            "output_per_mtok": _NUM,
            "cached_input_per_mtok": _NULLABLE_NUM,
            "cache_write_per_mtok": _NULLABLE_NUM,
        },
    },
    "RoutingDoc": {
        "type": "object",
        "additionalProperties": False,
        "required": ["providers", "models"],
        "description": "The routing document: what changes live (docs/control-plane.md).",
        "properties": {
            "providers": _table("Provider"),
            "models": _table("Model"),
            "prices": _table("Price"),
            "defaults": {"type": "object", "description": "Default cache and guard policies."},
        },
        "examples": [_EXAMPLE_DOC],
    },
    "RoutingVersion": {
        "type": "object",
        "required": ["version", "doc"],
        "properties": {"version": _VERSION, "doc": _ref("RoutingDoc")},
    },
    "RoutingPut": {
        "type": "object",
        "additionalProperties": False,
        "required": ["doc"],
        "properties": {
            "doc": _ref("RoutingDoc"),
            "message": {"type": "string", "maxLength": 500, "description": "Kept in the history."},
            "expect_version": {**_VERSION, "description": "Refuse (409) unless this is the current version."},
        },
        "examples": [{"doc": _EXAMPLE_DOC, "message": "example"}],
    },
    "RoutingChanged": {"type": "object", "required": ["version"], "properties": {"version": _VERSION}},
    "RoutingRollback": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "to": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_INT,
                "description": "Default: the version before.",
            }
        },
    },
    "RoutingRolledBack": {
        "type": "object",
        "required": ["version", "to"],
        "properties": {"version": _VERSION, "to": {"type": "integer", "minimum": 1}},
    },
    "RoutingHistory": {
        "type": "object",
        "required": ["history"],
        "properties": {
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["version", "at", "actor", "source", "digest", "changed"],
                    "properties": {
                        "version": _VERSION,
                        "at": {"type": "number"},
                        "actor": {
                            "type": "string",
                            "description": "file:<path>, env, token:<id>, cli:<user>...",
                        },
                        "source": {"type": "string", "description": "file, admin or rollback"},
                        "message": {"type": "string"},
                        "digest": {"type": "string"},
                        "changed": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
        },
    },
    "RoutingRefused": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "problems": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Each problem with its location in the document.",
                    },
                },
            }
        },
    },
}
for _section, _item, _pattern in (("models", "Model", MODEL_NAME_PATTERN),
                                  ("providers", "Provider", PROVIDER_NAME_PATTERN),
                                  ("prices", "Price", MODEL_NAME_PATTERN)):  # fmt: skip
    SCHEMAS[f"{_item}List"] = {
        "type": "object",
        "required": ["version", _section],
        "properties": {"version": _VERSION, _section: _table(_item)},
    }
    SCHEMAS[f"{_item}Entry"] = {
        "type": "object",
        "required": ["version", "name", _section[:-1]],
        "properties": {
            "version": _VERSION,
            "name": {"type": "string", "pattern": _pattern},
            _section[:-1]: _ref(_item),
        },
    }

_EXPECT = _q("expect_version", _VERSION, "Refuse (409) unless this is the current version")
_CHANGED = {
    "200": _json(_ref("RoutingChanged"), "The new version"),
    "400": _json(_ref("RoutingRefused"), "Refused"),
}


def _name_param(pattern: str) -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": pattern}}


def _links(item: str, section: str) -> dict[str, Any]:
    """Links from a PUT's answer to the operations on what it made (the path's name), for clients
    and for the stateful tests that walk them."""
    ops = [f"delete{item}", *([f"get{item}"] if section != "prices" else [])]
    return {op: {"operationId": op, "parameters": {"name": "$request.path.name"}} for op in ops}


def _entries(prefix: str, section: str, item: str, pattern: str) -> dict[str, Any]:
    kind = section[:-1]
    name = [_name_param(pattern)]
    missing = _err(f"No such {kind}")
    delete_answers = {**_CHANGED, "404": missing, "409": _err("The version moved" + (
        ", or a model's routes still name the provider" if section == "providers" else ""))}  # fmt: skip
    one: dict[str, Any] = {
        "put": _op(f"put{item}", f"Create or replace one {kind} (a new version)",
                   {**_CHANGED, "200": {**_CHANGED["200"], "links": _links(item, section)},
                    "409": _err("The version moved")}, parameters=[*name, _EXPECT],
                   requestBody=_body(item, True)),
        "delete": _op(f"delete{item}", f"Delete one {kind} (a new version)", delete_answers,
                      parameters=[*name, _EXPECT]),
    }  # fmt: skip
    if section != "prices":
        one["get"] = _op(f"get{item}", f"One {kind}", {"200": _json(_ref(f"{item}Entry"), f"The {kind}"),
                                                        "404": missing}, parameters=name)  # fmt: skip
    return {
        f"{prefix}/{section}": {
            "get": _op(f"list{item}s", f"Every {kind} of the current version",
                       {"200": _json(_ref(f"{item}List"), f"{section.capitalize()} by name")}),
        },
        f"{prefix}/{section}/{{name}}": one,
    }  # fmt: skip


def paths(prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        f"{prefix}/routing": {
            "get": _op("getRouting", "The current routing document and its version",
                       {"200": _json(_ref("RoutingVersion"), "The current version")}),
            "put": _op("putRouting", "Replace the whole routing document (a new version)",
                       {**_CHANGED, "409": _err("The version moved (expect_version)")},
                       requestBody=_body("RoutingPut", True)),
        },
        f"{prefix}/routing/history": {
            "get": _op("getRoutingHistory", "The versions' history, newest first",
                       {"200": _json(_ref("RoutingHistory"), "History entries")},
                       parameters=[_q("limit", {"type": "integer", "minimum": 1, "maximum": KEEP, "default": 20},
                                      "At most this many entries")]),
        },
        f"{prefix}/routing/versions/{{n}}": {
            "get": _op("getRoutingVersion", "One kept version's document",
                       {"200": _json(_ref("RoutingVersion"), "The version"), "404": _err("Not kept")},
                       parameters=[{"name": "n", "in": "path", "required": True,
                                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INT}}]),
        },
        f"{prefix}/routing/rollback": {
            "post": _op("rollbackRouting", "A new version whose document is an earlier version's",
                        {"200": _json(_ref("RoutingRolledBack"), "The new version"),
                         "400": _json(_ref("RoutingRefused"), "Refused"),
                         "404": _err("No such version kept"), "409": _err("The version moved")},
                        requestBody=_body("RoutingRollback", False)),
        },
        **_entries(prefix, "models", "Model", MODEL_NAME_PATTERN),
        **_entries(prefix, "providers", "Provider", PROVIDER_NAME_PATTERN),
        **_entries(prefix, "prices", "Price", MODEL_NAME_PATTERN),
    }  # fmt: skip
    out[f"{prefix}/prices"]["put"] = _op(
        "putPrices",
        "Replace the whole price table (a new version)",
        {**_CHANGED, "409": _err("The version moved")},
        parameters=[_EXPECT],
        requestBody=_body("PriceTable", True),
    )
    return out


SCHEMAS["PriceTable"] = {**_table("Price"), "description": "USD per million tokens, by model."}

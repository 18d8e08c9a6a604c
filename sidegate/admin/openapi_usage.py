"""The OpenAPI part of the usage endpoints (:mod:`sidegate.admin.api_usage`), built from the same
bounds and patterns the handlers enforce; :mod:`sidegate.admin.openapi` merges it in."""

from __future__ import annotations

from typing import Any

from sidegate.admin import controlplane as cp
from sidegate.admin import usage
from sidegate.admin.openapi_parts import json_answer as json
from sidegate.admin.openapi_parts import operation as op
from sidegate.admin.openapi_parts import query_param as _q
from sidegate.admin.openapi_parts import ref

_COUNTS = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_AMOUNTS = {"type": "array", "items": {"type": "number", "minimum": 0}}
_SCAN = {
    "tenant": {"type": ["string", "null"], "description": "The tenant asked for; null = every tenant the caller sees."},
    "records_read": {"type": "integer", "minimum": 0, "description": "Ledger records read (newest first)."},
    "record_limit": {"type": "integer", "const": usage.MAX_RECORDS, "description": "The most records one answer reads."},
    "truncated": {"type": "boolean", "description": "The range held more records than record_limit: the oldest were not read."},
    "complete_from": {
        "type": ["number", "null"],
        "description": "When truncated: the Unix time (s) from which the answer has every record; else null.",
    },
    "from": {"type": "number", "description": "Start of the range covered (Unix s, bucket-aligned)."},
    "to": {"type": "number", "description": "End of the range covered (Unix s, exclusive)."},
    "range_capped": {"type": "boolean", "description": "The range asked was longer than allowed: its start was moved later."},
}  # fmt: skip
_SCAN_REQUIRED = list(_SCAN)
_ROW = {
    "type": "object",
    "required": ["group", "requests", "errors", "error_rate", "input_tokens", "output_tokens", "cost_usd",
                 "latency_p50_ms", "latency_p95_ms"],
    "properties": {
        "group": {"type": "string"},
        "requests": {"type": "integer", "minimum": 0},
        "errors": {"type": "integer", "minimum": 0},
        "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "input_tokens": {"type": "integer", "minimum": 0},
        "output_tokens": {"type": "integer", "minimum": 0},
        "cost_usd": {"type": "number", "minimum": 0},
        "latency_p50_ms": {"type": "number", "minimum": 0},
        "latency_p95_ms": {"type": "number", "minimum": 0},
    },
}  # fmt: skip

USAGE_SCHEMAS: dict[str, Any] = {
    "UsageSeries": {
        "type": "object",
        "description": "Per-bucket sums per group (the top groups by spend, the rest summed in `(other)`). "
        "Teams and users are named inside their tenant (`acme/ml`); `(none)` = not set.",
        "required": [*_SCAN_REQUIRED, "bucket_s", "group_by", "groups_merged", "buckets", "series"],
        "properties": {
            **_SCAN,
            "bucket_s": {"type": "integer", "enum": sorted(usage.BUCKETS.values())},
            "group_by": {"type": "string", "enum": list(usage.GROUP_BYS)},
            "groups_merged": {"type": "integer", "minimum": 0},
            "buckets": {"type": "array", "maxItems": usage.MAX_BUCKETS, "items": {"type": "number"}},
            "series": {
                "type": "array",
                "maxItems": usage.MAX_GROUPS + 1,
                "items": {
                    "type": "object",
                    "required": ["group", *usage.METRICS],
                    "properties": {
                        "group": {"type": "string"},
                        "requests": _COUNTS,
                        "errors": _COUNTS,
                        "input_tokens": _COUNTS,
                        "output_tokens": _COUNTS,
                        "cost_usd": _AMOUNTS,
                    },
                },
            },
        },
    },
    "UsageTop": {
        "type": "object",
        "required": [
            *_SCAN_REQUIRED,
            "group_by",
            "rows",
            "groups",
            "requests",
            "errors",
            "error_rate",
            "status_classes",
        ],
        "properties": {
            **_SCAN,
            "group_by": {"type": "string", "enum": list(usage.GROUP_BYS)},
            "rows": {"type": "array", "maxItems": usage.TOP_MAX, "items": _ROW},
            "groups": {"type": "integer", "minimum": 0},
            "requests": {"type": "integer", "minimum": 0},
            "errors": {"type": "integer", "minimum": 0},
            "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
            "status_classes": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "Requests by status class (2xx, 3xx, 4xx, 5xx), aborted ones, other.",
            },
        },
    },
    "RecentRequest": {
        "type": "object",
        "description": "One request's metadata from the ledger (never a prompt or an answer).",
        "required": ["id", *usage.RECENT_FIELDS],
        "properties": {
            "id": {"type": "string", "pattern": usage.AFTER_PATTERN},
            **{
                f: {"type": "string"}
                for f in (
                    "request_id",
                    "tenant",
                    "team",
                    "user",
                    "key_id",
                    "api",
                    "endpoint",
                    "model",
                    "provider",
                    "upstream_model",
                    "cache",
                )
            },
            **{
                f: {"type": "integer"}
                for f in ("status", "attempts", "input_tokens", "output_tokens", "cached_tokens")
            },
            "stream": {"type": "boolean"},
            "aborted": {"type": "boolean"},
            "ts": {"type": "number"},
            "cost_usd": {"type": "number"},
            "latency_ms": {"type": "number"},
            "ttft_ms": {"type": ["number", "null"]},
        },
    },
    "RecentRequests": {
        "type": "object",
        "required": ["requests", "cursor", "skipped", "tenant"],
        "properties": {
            "requests": {
                "type": "array",
                "maxItems": usage.RECENT_MAX,
                "items": {"$ref": "#/components/schemas/RecentRequest"},
            },
            "cursor": {
                "type": ["string", "null"],
                "description": "The newest id looked at: pass it as `after` next time.",
            },
            "skipped": {
                "type": "boolean",
                "description": "More requests came since `after` than this answer holds.",
            },
            "tenant": {"type": ["string", "null"]},
        },
    },
}


_TENANT = _q("tenant", {"type": "string", "pattern": cp.TENANT_PATTERN}, "Only this tenant's requests.")
_RANGE = [
    _q("from", {"type": "string", "pattern": usage.TIME_PATTERN, "default": usage.DEFAULT_FROM},
       "Start: Unix seconds, or a duration back from now (`90m`, `24h`, `7d`)."),
    _q("to", {"type": "string", "pattern": usage.TIME_PATTERN}, "End (default now): same forms; a later time is now."),
]  # fmt: skip


def _group(default: str) -> dict[str, Any]:
    return _q(
        "group_by",
        {"type": "string", "enum": list(usage.GROUP_BYS), "default": default},
        "What one line or row is.",
    )


def usage_paths(prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}/usage/series": {
            "get": op(
                "usageSeries",
                "Requests, errors, tokens and spend per time bucket per group, from the ledger (bounded)",
                {"200": json(ref("UsageSeries"), "The series")},
                parameters=[
                    *_RANGE,
                    _q("bucket", {"type": "string", "enum": list(usage.BUCKETS), "default": "hour"}, "Bucket size."),
                    _group("tenant"),
                    _TENANT,
                ],
            )
        },
        f"{prefix}/usage/top": {
            "get": op(
                "usageTop",
                "The top groups by spend with error rates and latency percentiles, from the ledger (bounded)",
                {"200": json(ref("UsageTop"), "The top groups")},
                parameters=[
                    *_RANGE,
                    _q("bucket", {"type": "string", "enum": list(usage.BUCKETS)},
                       "Cover the same range as a series of this bucket (default: minute-aligned, up to 90 days)."),
                    _group("model"),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": usage.TOP_MAX, "default": 10}, "Rows."),
                    _TENANT,
                ],
            )
        },
        f"{prefix}/requests/recent": {
            "get": op(
                "recentRequests",
                "The newest requests' metadata (a live tail: pass the answer's cursor as `after`)",
                {"200": json(ref("RecentRequests"), "Requests, oldest first")},
                parameters=[
                    _q("after", {"type": "string", "pattern": usage.AFTER_PATTERN}, "Only requests after this cursor."),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": usage.RECENT_MAX, "default": 50}, "Most requests."),
                    _TENANT,
                ],
            )
        },
    }  # fmt: skip

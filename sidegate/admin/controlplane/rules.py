"""The control plane's input rules and refusals, shared by the admin API and the CLI.

The OpenAPI document (:mod:`sidegate.admin.openapi`) states the same rules from these constants, so the
API's schema and the checks cannot drift apart. Each refusal carries the HTTP status the admin API
answers with; the CLI prints the message instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sidegate.keystore import LIMIT_FIELDS, TenantLimits

# Input rules (the OpenAPI document in sidegate.admin.openapi states the same ones).
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # as config's names
KEY_ID_PATTERN = r"^[a-z0-9]{8}$"
MODEL_PATTERN = r"^[!-~]{1,200}$"  # printable ASCII, no spaces; "*" = every model
MAX_MODELS = 100
MAX_OVERLAP_S = 30 * 86400
MAX_EXPIRES_AT = 253402300799.0  # 9999-12-31
MAX_LIMIT = 1e12
DEFAULT_OVERLAP_S = 3600.0


class ControlPlaneError(Exception):
    """A refused operation; ``status`` is the HTTP status the admin API answers with."""

    status = 400
    code = "invalid_request"


class Invalid(ControlPlaneError, ValueError):
    pass


class NotFound(ControlPlaneError):
    status = 404
    code = "not_found"


class Conflict(ControlPlaneError):
    status = 409
    code = "conflict"


def _match(pattern: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern[1:-1], value):
        raise Invalid(f"{what} must be a string matching {pattern}")
    return value


def check_tenant(name: Any) -> str:
    return _match(TENANT_PATTERN, name, "tenant name")


def check_key_id(kid: Any) -> str:
    return _match(KEY_ID_PATTERN, kid, "key id")


def check_models(models: Any) -> tuple[str, ...]:
    if isinstance(models, str) or not isinstance(models, Iterable):
        raise Invalid("models must be a list of model names")
    models = list(models)
    if not 1 <= len(models) <= MAX_MODELS:
        raise Invalid(f"models must list 1 to {MAX_MODELS} names ('*' = every model)")
    out: list[str] = []
    for m in models:
        _match(MODEL_PATTERN, m, "each model")
        if m not in out:
            out.append(m)
    return tuple(out)


def _number(
    value: Any, what: str, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{what} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{what} must be a finite number")
    if integer and value != int(value):
        raise Invalid(f"{what} must be an integer")
    if value < lo or (lo_open and value == lo) or value > hi:
        raise Invalid(f"{what} must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")
    return float(value)


def check_expires_at(value: Any) -> float | None:
    """Epoch seconds, or None for a key that never expires. A past time makes an already expired key."""
    if value is None:
        return None
    return _number(value, "expires_at", 0, MAX_EXPIRES_AT, lo_open=True)


def check_overlap(value: Any) -> float:
    return _number(value, "overlap_s", 0, MAX_OVERLAP_S)


def check_limits(data: Any) -> TenantLimits:
    """A limits object: any of rpm, tpm (integers), daily_usd, monthly_usd (numbers); null = unlimited."""
    if not isinstance(data, Mapping):
        raise Invalid("limits must be an object")
    unknown = sorted(set(data) - set(LIMIT_FIELDS))
    if unknown:
        raise Invalid(
            f"unknown limit field(s): {', '.join(map(str, unknown))}; known: {', '.join(LIMIT_FIELDS)}"
        )
    vals: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        v = data.get(name)
        if v is not None:
            integer = name in ("rpm", "tpm")
            n = _number(v, name, 0, MAX_LIMIT, integer=integer)
            vals[name] = int(n) if integer else n
    return TenantLimits(**vals)

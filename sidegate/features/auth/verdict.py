"""The authenticator's verdicts (a key's or a JWT's): who is calling, or the refusal in the client's format."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidegate.errors import Api


@dataclass(slots=True)
class Allow:
    tenant: str
    key_id: str
    models: tuple[str, ...]
    team: str = ""
    user: str = ""


@dataclass(slots=True)
class Deny:
    status: int
    api: Api
    body: bytes
    reason: str  # bounded label for metrics (sidegate/metrics/labels.py AUTHZ_REASONS): missing_key, unknown_key, jwt_expired...
    headers: dict[str, str] = field(default_factory=dict)

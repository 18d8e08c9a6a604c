"""`authorization: Bearer <key>`: OpenAI and most OpenAI-compatible providers."""

from __future__ import annotations

from sidegate.credentials.base import scrubbable


class BearerKey:
    """One key sent as a bearer token (the header value is built once, not per try)."""

    __slots__ = ("_value", "secrets")

    def __init__(self, key: str) -> None:
        self._value = f"Bearer {key}"
        self.secrets = scrubbable([key])

    def apply(self, headers: dict[str, str]) -> None:
        headers["authorization"] = self._value

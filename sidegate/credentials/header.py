"""A key sent as is in a named header: `x-api-key` (Anthropic), `api-key` (Azure OpenAI), or any
header a provider names."""

from __future__ import annotations

from sidegate.credentials.base import scrubbable


class HeaderKey:
    """One key in one header."""

    __slots__ = ("_header", "_key", "secrets")

    def __init__(self, header: str, key: str) -> None:
        self._header = header
        self._key = key
        self.secrets = scrubbable([key])

    def apply(self, headers: dict[str, str]) -> None:
        headers[self._header] = self._key

"""No credential: a provider that needs none (a local vLLM or Ollama), or whose key variable is not
set (the provider then answers 401, which the gateway reports as a refused key)."""

from __future__ import annotations


class NoCredential:
    """Sets nothing. ``secrets`` still lists keys configured for an `auth: none` provider: a key
    the gateway holds is never echoed to a client, whether or not it is sent."""

    __slots__ = ("secrets",)

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self.secrets = secrets

    def apply(self, headers: dict[str, str]) -> None:
        """Nothing to set."""

"""A provider key Envoy reads from its own environment: the direct lane's header_mutation and the
try lane's Lua set it without any Python seeing it."""

from __future__ import annotations

from sidegate.config import ProviderConfig


def env_credential(p: ProviderConfig) -> tuple[str, str, str | None] | None:
    """(header, value prefix, environment variable) with which Envoy itself sets the provider's key
    from its own environment (the direct lane's header_mutation, the try lane's Lua when it applies
    a try prepared by the front); no variable for `auth: none`; None when the key comes from a pool
    (Python picks each try's)."""
    if p.api_key_envs:
        return None
    style = p.auth_style
    if style == "none" or not p.api_key_env:
        return ("", "", None)
    return ("authorization", "Bearer ", p.api_key_env) if style == "bearer" else (style, "", p.api_key_env)

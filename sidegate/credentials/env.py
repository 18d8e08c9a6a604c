"""The environment key: Envoy sets the provider's key itself, from its own environment (the direct
lane's header_mutation, the try lane's Lua), so no Python process sees it. Decided from the config
alone: the bootstrap is rendered where the keys may not be set."""

from __future__ import annotations

from typing import NamedTuple

from sidegate.config import ProviderConfig
from sidegate.config.providers import CLOUD_AUTH


class EnvironmentKey(NamedTuple):
    header: str
    """The header Envoy sets ("" for no credential)."""
    prefix: str
    """Written before the key ("Bearer " for bearer)."""
    env: str | None
    """The environment variable Envoy reads; None for no credential."""


def env_credential(p: ProviderConfig) -> EnvironmentKey | None:
    """How Envoy itself sets the provider's key from its own environment (the direct lane's
    header_mutation, the try lane's Lua when it applies a try prepared by the front); no variable
    for `auth: none`; None when the key comes from a pool (Python picks each try's) or from a cloud
    identity (a token or a signature only the per-try stage holds: a prepared try would leave it
    in Envoy's dynamic metadata, where the front's answer is kept for the request)."""
    if p.api_key_envs or p.auth_style in CLOUD_AUTH:
        return None
    style = p.auth_style
    if style == "none" or not p.api_key_env:
        return EnvironmentKey("", "", None)
    if style == "bearer":
        return EnvironmentKey("authorization", "Bearer ", p.api_key_env)
    return EnvironmentKey(style, "", p.api_key_env)

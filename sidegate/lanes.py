"""Which chains Envoy can serve alone (the direct lane), decided from the config: the bootstrap
renders the direct routes and clusters from it, and the lane feature sends a request there only
when a route exists for it, so both read this one definition."""

from __future__ import annotations

from sidegate.config import ProviderConfig, SidegateConfig
from sidegate.errors import Api


def direct_provider(p: ProviderConfig) -> bool:
    """Can Envoy alone prepare a request for this provider (no per-try Python)?"""
    one_key = p.api_key_env is not None or p.auth_style == "none"
    return one_key and not p.api_key_envs and not p.path_prefix and not p.query


def direct_chain(cfg: SidegateConfig, model: str, start: int) -> Api | None:
    """The client API whose requests for `model` (chain from priority group `start`) may take the
    direct lane, or None when some provider of that chain needs the per-try stage."""
    m = cfg.models.get(model)
    if m is None:
        return None
    apis = set()
    for group in m.groups()[start:]:
        for r in group:
            p = cfg.providers[r.provider]
            if not direct_provider(p) or (r.model is not None and r.model != model):
                return None
            apis.add(p.api)
    return apis.pop() if len(apis) == 1 else None

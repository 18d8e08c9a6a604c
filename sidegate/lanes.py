"""Which tries Envoy can serve without per-try Python, decided from the config: the chains of the
direct lane (the bootstrap renders their routes and clusters from it, and the lane feature sends a
request there only when a route exists for it, so both read this one definition), and the first
try of the try lane that the HTTP front can prepare at check time."""

from __future__ import annotations

from sidegate.config import ProviderConfig, SidegateConfig
from sidegate.credentials.env import env_credential
from sidegate.errors import CLIENT_APIS, Api


def direct_provider(p: ProviderConfig) -> bool:
    """Can Envoy alone prepare a request for this provider (no per-try Python)?"""
    one_key = p.api_key_env is not None or p.auth_style == "none"
    if p.api in (Api.GEMINI, Api.BEDROCK) or p.vertex is not None:  # the model is in the path, built per try
        return False
    return one_key and not p.api_key_envs and not p.path_prefix and not p.query


def direct_apis(cfg: SidegateConfig, model: str, start: int) -> frozenset[Api]:
    """The client APIs whose requests for `model` (chain from priority group `start`) may take the
    direct lane: those every provider of that chain takes as is (`ProviderConfig.upstream_api`).
    An OpenAI provider that serves the Responses API takes both chat completions and Responses
    requests as is; an `api: responses` provider takes Responses ones. Empty: the per-try stage
    is needed for every client API."""
    m = cfg.models.get(model)
    if m is None:
        return frozenset()
    apis = frozenset(CLIENT_APIS) - {Api.GEMINI}  # a Gemini client's key may be in its query: per-try stage
    for group in m.groups()[start:]:
        for r in group:
            p = cfg.providers[r.provider]
            if not direct_provider(p) or (r.model is not None and r.model != model):
                return frozenset()
            apis &= frozenset(a for a in Api if p.upstream_api(a) is a)
    return apis


def first_try_provider(cfg: SidegateConfig, model: str, start: int, pin: str = "") -> str | None:
    """The provider of `model`'s first try (chain from priority group `start`, or pinned to start on
    `pin`: a routing policy's choice) when it is known at check time: the group is one provider.
    None: a weighted group (Envoy picks)."""
    m = cfg.models.get(model)
    groups = m.groups() if m is not None else []
    if pin:
        return pin if pin in cfg.providers else None
    if start >= len(groups) or len(groups[start]) != 1:
        return None
    return groups[start][0].provider or None


def preparable_first_try(cfg: SidegateConfig, model: str, start: int, pin: str = "") -> str | None:
    """The provider of `model`'s first try (chain from priority group `start`, or pinned to start on
    `pin`: a routing policy's choice) when the front can prepare that try at check time: the group
    is one provider whose key Envoy reads from its own environment (the try lane's Lua sets it).
    None: the Lua must call the front for it (a weighted group, a key pool)."""
    provider = first_try_provider(cfg, model, start, pin)
    if provider is None:
        return None
    return provider if env_credential(cfg.providers[provider]) is not None else None

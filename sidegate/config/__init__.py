"""The one place for configuration: a typed, validated model loaded from YAML with env overrides.

One module per section: where things run (services), providers and models, and each feature's
policy (cache, guard, quota, pricing); `root` assembles them and loads the file. Every section's
model is importable from here too, so code that reads a config needs to know only this package.
"""

from sidegate.config.cache import CachePolicy, SemanticSettings
from sidegate.config.guard import GuardPolicy
from sidegate.config.providers import (
    NEVER_FORWARDED,
    NEVER_FORWARDED_PREFIXES,
    AuthStyle,
    BreakerConfig,
    ModelConfig,
    ProviderConfig,
    RouteConfig,
    RoutingPolicy,
    WeightedKey,
)
from sidegate.config.quota import QuotaPolicy, TenantQuota
from sidegate.config.responses import ResponsesConfig
from sidegate.config.root import (
    ConfigError,
    KeyConfig,
    RouteDefaults,
    SidegateConfig,
    TenantConfig,
    load,
    load_or_exit,
    parse,
)
from sidegate.config.services import (
    ListenerConfig,
    ObservabilityConfig,
    ServicesConfig,
    StoreConfig,
    local_address,
)
from sidegate.config.tracing import TracingConfig

__all__ = [
    "NEVER_FORWARDED", "NEVER_FORWARDED_PREFIXES", "AuthStyle", "BreakerConfig", "CachePolicy", "ConfigError",
    "GuardPolicy", "KeyConfig", "ListenerConfig", "ModelConfig", "ObservabilityConfig", "ProviderConfig",
    "QuotaPolicy", "ResponsesConfig", "RouteConfig", "RouteDefaults", "RoutingPolicy", "SemanticSettings", "ServicesConfig", "SidegateConfig",
    "StoreConfig", "TenantConfig", "TenantQuota", "TracingConfig", "WeightedKey", "load", "load_or_exit", "local_address", "parse",
]  # fmt: skip

"""The one place for configuration: a typed, validated model loaded from YAML with env overrides.

One module per section: where things run (services), providers and models, and each feature's
policy (cache, guard, quota, pricing); `root` assembles them and loads the file.
"""

from sidegate.config.providers import BreakerConfig, ModelConfig, ProviderConfig, RouteConfig
from sidegate.config.root import ConfigError, SidegateConfig, load, parse
from sidegate.config.services import ListenerConfig, ServicesConfig, local_address

__all__ = [
    "BreakerConfig", "ConfigError", "ListenerConfig", "ModelConfig", "ProviderConfig", "RouteConfig",
    "ServicesConfig", "SidegateConfig", "load", "local_address", "parse",
]  # fmt: skip

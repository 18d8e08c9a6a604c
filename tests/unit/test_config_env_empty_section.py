"""An environment override into a section the file leaves empty (`observability:` with every child
commented out, so YAML null) applies, instead of crashing the load with an AttributeError."""

from __future__ import annotations

from typing import Any

from sidegate import config as config_mod

BASE: dict[str, Any] = {
    "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
    "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
}


def test_override_into_an_empty_section() -> None:
    cfg = config_mod.parse({**BASE, "observability": None}, env={"SIDEGATE_OTLP_ENDPOINT": "collector:4317"})
    assert cfg.observability.tracing.endpoint == "collector:4317"


def test_override_into_a_section_that_is_not_a_mapping_is_a_config_error() -> None:
    try:
        config_mod.parse({**BASE, "observability": "yes"}, env={"SIDEGATE_OTLP_ENDPOINT": "collector:4317"})
    except config_mod.ConfigError as exc:
        assert any(p.startswith("observability") for p in exc.problems), exc.problems
    else:
        raise AssertionError("expected a ConfigError")

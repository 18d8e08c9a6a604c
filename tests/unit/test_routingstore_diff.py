"""routingstore.diff: what differs between two routing documents, by `section.name`."""

from __future__ import annotations

from sidegate.routingstore import diff

A = {
    "providers": {"openai": {"api": "openai"}, "azure": {"api": "openai"}},
    "models": {"gpt-4o": {"routes": [{"provider": "openai"}]}},
    "prices": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10}},
}


def test_added_removed_changed() -> None:
    b = {
        "providers": {"openai": {"api": "openai"}, "anthropic": {"api": "anthropic"}},
        "models": {"gpt-4o": {"routes": [{"provider": "openai"}, {"provider": "anthropic"}]}},
        "prices": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10}},
        "defaults": {"cache": {"mode": "exact"}},
    }
    assert diff(A, b) == {
        "added": ["providers.anthropic"],
        "removed": ["providers.azure"],
        "changed": ["defaults", "models.gpt-4o"],
    }


def test_same_and_empty() -> None:
    assert diff(A, A) == {"added": [], "removed": [], "changed": []}
    assert diff(None, A)["added"] == ["models.gpt-4o", "prices.gpt-4o", "providers.azure", "providers.openai"]
    assert diff(A, {})["removed"] == ["models.gpt-4o", "prices.gpt-4o", "providers.azure", "providers.openai"]


def test_a_file_whose_provider_carries_an_inline_credential_is_never_seeded(caplog) -> None:
    """The store and its history are every global viewer's to read: the file's document is refused
    like the admin API refuses it (its location logged, never the value), before any store access."""
    import asyncio

    from sidegate import config, routingstore

    cfg = config.parse({
        "providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:1", "headers": {"Authorization": "Bearer sk-live-123"}}},
        "models": {"m": {"routes": [{"provider": "p"}]}},
    }, env={})  # fmt: skip
    with caplog.at_level("ERROR", "sidegate.routing"):
        assert asyncio.run(routingstore.seed_file(None, cfg, path="/etc/sidegate.yaml")) is None  # type: ignore[arg-type]
    assert "providers.p.headers.Authorization" in caplog.text and "sk-live" not in caplog.text

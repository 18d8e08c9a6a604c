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

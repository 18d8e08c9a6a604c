"""Pluggable injection classifiers: callables registered by name, chosen per route in the policy.

A classifier takes one piece of user-controlled text and returns a score in [0, 1]. It runs inline on
the request path, so it must be fast (a small local model, not a network call) and thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable

Classifier = Callable[[str], float]

_REGISTRY: dict[str, Classifier] = {}


def register_classifier(name: str, fn: Classifier) -> None:
    """Make `fn` available to policies as ``injection.classifier: <name>`` (replaces an earlier one)."""
    if not name:
        raise ValueError("classifier name must not be empty")
    _REGISTRY[name] = fn


def unregister_classifier(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_classifier(name: str) -> Classifier | None:
    return _REGISTRY.get(name)


def registered() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))

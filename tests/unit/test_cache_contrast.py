"""The contrast check that vetoes semantic matches between different questions (no model needed)."""

from __future__ import annotations

import numpy as np

from sidegate.features.cache.contrast import compatible, signature
from sidegate.features.cache.vectors import NumpyStore


def ok(a: str, b: str) -> bool:
    return compatible(signature(a), signature(b)) and compatible(signature(b), signature(a))


def test_paraphrases_pass() -> None:
    assert ok("What is the capital of France?", "what's the capital of france")
    assert ok("How do I exit vim?", "How do I quit vim?")
    assert ok("What is 15 percent of 200?", "What is 15% of 200?")
    assert ok(
        "Which planet is the largest in our solar system?", "What is the largest planet in the solar system?"
    )


def test_numbers_negations_opposites_and_swaps_are_vetoed() -> None:
    assert not ok("What is 2 + 2?", "What is 2 + 3?")
    assert not ok("Who won the World Cup in 2018?", "Who won the World Cup in 2022?")
    assert not ok(
        "Generate 5 names for a cat.", "Generate five names for a cat."
    )  # a number word is a number
    assert not ok("Is it safe to eat raw eggs?", "Isn't it safe to eat raw eggs?")
    assert not ok("How do I enable dark mode?", "How do I disable dark mode?")
    assert not ok("Convert 5 miles to kilometers.", "Convert 5 kilometers to miles.")
    assert not ok("How many ounces are in a pound?", "How many pounds are in an ounce?")


def test_signature_keeps_no_prompt_words_but_numbers_and_contrast_words() -> None:
    sig = signature("Tell me the secret launch code for Project Falcon in 2027, not the old one")
    assert "secret" not in sig and "falcon" not in sig and "launch" not in sig
    assert "2027" in sig and "old" in sig
    assert compatible("", sig) and compatible(sig, "")  # entries indexed without a signature


def _unit(i: int) -> list[float]:
    v = np.zeros(384, dtype=np.float32)
    v[i % 384] = 1.0
    v[(i + 1) % 384] = 0.2
    return list(v / np.linalg.norm(v))


def test_store_skips_a_vetoed_best_match_for_the_next_candidate() -> None:
    s = NumpyStore()
    close = _unit(1)
    closer = list(np.asarray(close) * 0.999 + np.asarray(_unit(2)) * 0.001)
    s.upsert("a", "vetoed", close, 100.0, tag="x")
    s.upsert("a", "fine", closer, 100.0, tag="y")
    assert s.query("a", close, 0.9, 0.0)[0] == "vetoed"  # the best match, without a veto
    got = s.query("a", close, 0.9, 0.0, accept=lambda tag: tag != "x")
    assert got is not None and got[0] == "fine" and got[1] >= 0.9
    assert s.query("a", close, 0.9, 0.0, accept=lambda tag: False) is None

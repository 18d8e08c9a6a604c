"""Suite-wide test settings.

Hypothesis draws the same examples on every run of the suite (``derandomize``: a seed from each
test's own source), so a tree that passed keeps passing in CI instead of failing later on a newly
drawn example; a change to a test or to Hypothesis draws a new set, and that run shows it. To search
further: ``HYPOTHESIS_PROFILE=explore`` (fresh random examples each run, as Hypothesis does by
default) or ``HYPOTHESIS_PROFILE=thorough`` (25 times the fuzz tests' examples, random;
tests/fuzz_helpers.py). docs/reliability.md says how the fuzzers are run.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
if os.environ.get("HYPOTHESIS_PROFILE", "") in ("", "repeatable", "explore"):
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "repeatable")

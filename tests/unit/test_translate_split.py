"""Property: any byte-level split of a provider stream gives the same client stream and usage."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

import translate_helpers as h

STREAM_CASES = h.cases("stream.sse")


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_every_pair_has_stream_cases():
    assert {c.parent.name for c in STREAM_CASES} == set(h.PAIRS)


@pytest.mark.parametrize("case", STREAM_CASES, ids=h.case_id)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_splits_match_unsplit(case: Path, data: st.DataObject):
    raw = (case / "stream.sse").read_bytes()
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=40))
    whole = h.run_stream(case)
    assert h.run_stream(case, _split(raw, cuts)) == whole


@pytest.mark.parametrize("case", STREAM_CASES, ids=h.case_id)
def test_byte_by_byte_and_inside_utf8(case: Path):
    raw = (case / "stream.sse").read_bytes()
    whole = h.run_stream(case)
    assert h.run_stream(case, [raw[i : i + 1] for i in range(len(raw))]) == whole
    # A cut right after every UTF-8 lead byte (inside each multi-byte character).
    leads = [i + 1 for i, b in enumerate(raw) if b >= 0xC0]
    assert h.run_stream(case, _split(raw, leads)) == whole

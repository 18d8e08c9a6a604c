"""The in-process vector store: scope isolation, expiry, overwrite, growth and capacity."""

from __future__ import annotations

import numpy as np

from sidegate.features.cache.vectors import NumpyStore, point_id


def _unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=384)
    return (v / np.linalg.norm(v)).tolist()


def test_query_scope_threshold_expiry_and_cleanup():
    s = NumpyStore()
    for i in range(20):  # forces the matrix to grow a few times
        assert s.upsert("a", f"k{i}", _unit(i), expires_at=100.0 + i)
    s.upsert("b", "other", _unit(3), expires_at=1000.0)
    key, score = s.query("a", _unit(3), 0.95, now=0.0)
    assert key == "k3" and score > 0.999
    assert s.query("a", _unit(999), 0.95, now=0.0) is None  # nothing similar
    assert s.query("c", _unit(3), 0.5, now=0.0) is None  # other scope
    assert s.query("a", _unit(3), 0.95, now=103.0) is None  # expired (expires_at <= now)
    s.upsert("a", "k3", _unit(3), expires_at=500.0)  # refill overwrites in place
    assert s.count() == 21
    assert s.cleanup(now=110.0) == 10  # k0..k10 (expires_at <= 110) except the refreshed k3
    assert s.query("a", _unit(3), 0.95, now=110.0)[0] == "k3"
    assert s.query("a", _unit(15), 0.95, now=110.0)[0] == "k15"
    assert s.count() == 11


def test_capacity():
    s = NumpyStore(max_points=2)
    assert s.upsert("a", "k1", _unit(1), 10.0) and s.upsert("b", "k2", _unit(2), 10.0)
    assert not s.upsert("a", "k3", _unit(3), 10.0)
    assert s.upsert("a", "k1", _unit(4), 20.0)  # overwriting an existing key is allowed when full
    assert s.cleanup(now=15.0) == 1 and s.upsert("a", "k3", _unit(3), 30.0)


def test_point_id_is_stable_uuid():
    assert point_id("ab" * 32) == point_id("ab" * 32) == "abababab-abab-abab-abab-abababababab"

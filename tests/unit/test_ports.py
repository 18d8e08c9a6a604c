"""The range free ports are picked from (SIDEGATE_PORT_RANGE): the parallel test workers each take
a slice of it (tests/conftest.py)."""

from __future__ import annotations

import pytest

from sidegate.ports import RANGE_ENV, free_port, free_port_block, port_range


def test_default_range_is_below_the_ephemeral_ports(monkeypatch):
    monkeypatch.delenv(RANGE_ENV, raising=False)
    assert port_range() == (20000, 32000)


def test_ports_come_from_the_configured_range(monkeypatch):
    monkeypatch.setenv(RANGE_ENV, "23000-23100")
    assert port_range() == (23000, 23100)
    assert all(23000 <= free_port() < 23100 for _ in range(5))
    base = free_port_block(4)
    assert base >= 23000 and base + 4 <= 23100


@pytest.mark.parametrize("raw", ["23000", "a-b", "23100-23000", "80-1000", "60000-70000"])
def test_a_bad_range_is_refused(monkeypatch, raw):
    monkeypatch.setenv(RANGE_ENV, raw)
    with pytest.raises(ValueError, match=RANGE_ENV):
        port_range()

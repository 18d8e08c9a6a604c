"""tests/dashboard_helpers.py substitutes Grafana's variables as Grafana does (the e2e dashboard test
relies on it to send Prometheus what Grafana would)."""

from __future__ import annotations

import dashboard_helpers as dh
import pytest

SIX_HOURS = dh.TimeRange(0.0, 6 * 3600.0, scrape_s=1.0)


@pytest.mark.parametrize(
    ("ms", "rounded"),
    [(9, 10), (1499, 1000), (1500, 2000), (22500, 20000), (67500, 60000), (10**9, 86400000)],
)
def test_round_interval_like_grafana(ms: float, rounded: int) -> None:
    assert dh.round_interval_ms(ms) == rounded


def test_intervals_of_a_half_width_panel_over_six_hours() -> None:
    # 21600 s over 960 points = 22.5 s -> 20 s; rate interval = max(20 s + 1 s, 4 x 1 s).
    assert SIX_HOURS.interval_s(960) == 20.0
    assert SIX_HOURS.rate_interval_s(960) == 21.0
    # With Grafana's default scrape interval (15 s) the rate interval is 4 scrapes.
    assert dh.TimeRange(0.0, 600.0, scrape_s=15.0).rate_interval_s(960) == 60.0
    # Never below the scrape interval, however wide the panel.
    assert dh.TimeRange(0.0, 60.0, scrape_s=1.0).interval_s(2000) == 1.0


def test_substitute_builtins_and_variables() -> None:
    expr = 'sum(rate(x{tenant=~"$tenant", model=~"${model}"}[$__rate_interval])) + sum(increase(x[$__range]))'
    got = dh.substitute(expr, SIX_HOURS, 960, {"tenant": ".*", "model": dh.escape_value("gpt-4.1")})
    assert got == 'sum(rate(x{tenant=~".*", model=~"gpt-4\\.1"}[21s])) + sum(increase(x[21600s]))'
    with pytest.raises(AssertionError, match=r"\$nope"):
        dh.substitute('x{a=~"$nope"}', SIX_HOURS, 960, {})


def test_every_dashboard_target_and_variable_is_understood() -> None:
    dash = dh.load()
    targets = list(dh.targets(dash))
    assert len(targets) >= 20 and len({(t.panel_id, t.ref_id) for t in targets}) == len(targets)
    variables = dh.query_variables(dash)
    assert {v.name for v in variables} == {"tenant", "model"}
    assert all(v.metric_and_label()[0] for v in variables)
    values = {v.name: v.all_value or ".*" for v in variables}
    for t in targets:
        out = dh.substitute(t.expr, SIX_HOURS, t.max_data_points, values)
        assert "$" not in out, out

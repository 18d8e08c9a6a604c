"""The Grafana dashboard's queries as Grafana would send them to Prometheus.

Grafana never sends `$__rate_interval` or `$tenant` to Prometheus: it substitutes them first, from
the dashboard's time range, each panel's width (its default max data points) and the data source's
scrape interval. This module does the same substitution so a test can evaluate every target
expression of every panel through Prometheus' HTTP API:

- `$__interval`: (range / max data points) rounded as Grafana's `roundInterval` does, at least the
  scrape interval (the data source's "Scrape interval", its minimum step);
- `$__rate_interval`: max(`$__interval` + scrape interval, 4 x scrape interval);
- `$__range`: the range in whole seconds (`21600s`);
- a query variable: its "All" value (`allValue`, here `.*`) or one value regex-escaped
  (Grafana's Prometheus escaping for multi-value variables).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "k8s" / "grafana" / "sidegate-dashboard.json"
SCREEN_PX = 1920
"""The width the panels' max data points are derived from (Grafana: the panel's width in pixels)."""
GRID_COLUMNS = 24

# Grafana's rangeutil.roundInterval: (upper bound, rounded interval), in milliseconds.
_ROUND_MS = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
    (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
    (32400000, 21600000), (86400000, 43200000),
)  # fmt: skip
_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|{}\[\]])")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def round_interval_ms(ms: float) -> int:
    for bound, rounded in _ROUND_MS:
        if ms < bound:
            return rounded
    return 86400000


def parse_relative(spec: str) -> float:
    """Seconds back from now of a Grafana relative time (`now-6h`)."""
    m = re.fullmatch(r"now-(\d+)([smhdw])", spec)
    assert m, f"unsupported dashboard time {spec!r}"
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


@dataclass(frozen=True)
class Target:
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    max_data_points: int


def targets(dash: dict[str, Any]) -> Iterator[Target]:
    """Every target of every panel, rows' collapsed panels included."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[Target]:
        for p in panels:
            width = p.get("gridPos", {}).get("w", GRID_COLUMNS)
            points = int(p.get("maxDataPoints") or width * SCREEN_PX // GRID_COLUMNS)
            for t in p.get("targets", []):
                yield Target(p["id"], p["title"], t.get("refId", "A"), t["expr"], points)
            yield from walk(p.get("panels", []))

    return walk(dash["panels"])


@dataclass(frozen=True)
class Variable:
    name: str
    query: str
    all_value: str | None

    def metric_and_label(self) -> tuple[str | None, str]:
        """`label_values(metric, label)` -> (metric, label), as Grafana's Prometheus data source
        answers it: the label API filtered by the metric."""
        m = _LABEL_VALUES.match(self.query.strip())
        assert m, f"variable {self.name}: unsupported query {self.query!r}"
        return m.group(1), m.group(2)


def query_variables(dash: dict[str, Any]) -> list[Variable]:
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query") or v.get("definition")
        out.append(Variable(v["name"], q, v.get("allValue") if v.get("includeAll") else None))
    return out


def escape_value(value: str) -> str:
    """A single selected value of a multi-value variable, as Grafana puts it into a PromQL regex."""
    return _REGEX_SPECIAL.sub(r"\\\1", value)


@dataclass(frozen=True)
class TimeRange:
    start: float
    end: float
    scrape_s: float

    @property
    def range_s(self) -> float:
        return self.end - self.start

    def interval_s(self, max_data_points: int) -> float:
        ms = round_interval_ms(self.range_s * 1000 / max_data_points)
        return max(ms / 1000, self.scrape_s)

    def rate_interval_s(self, max_data_points: int) -> float:
        return max(self.interval_s(max_data_points) + self.scrape_s, 4 * self.scrape_s)


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def substitute(expr: str, tr: TimeRange, max_data_points: int, values: dict[str, str]) -> str:
    """`expr` with Grafana's built-in and dashboard variables replaced; an unknown variable fails."""
    builtins = {
        "__interval": _duration(tr.interval_s(max_data_points)),
        "__interval_ms": str(round(tr.interval_s(max_data_points) * 1000)),
        "__rate_interval": _duration(tr.rate_interval_s(max_data_points)),
        "__range": f"{math.floor(tr.range_s)}s",
        "__range_s": str(math.floor(tr.range_s)),
        "__range_ms": str(math.floor(tr.range_s * 1000)),
    }

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in builtins:
            return builtins[name]
        assert name in values, f"{expr!r}: variable ${name} is not defined by the dashboard"
        return values[name]

    return _VARIABLE.sub(one, expr)


def finite_values(result_type: str, result: list[dict[str, Any]]) -> list[float]:
    """The finite sample values of an instant (vector/scalar) or range (matrix) result."""
    if result_type == "scalar":
        raw: list[Any] = [result[1]] if result else []  # type: ignore[index]
    elif result_type == "matrix":
        raw = [v[1] for series in result for v in series["values"]]
    else:
        raw = [series["value"][1] for series in result]
    return [f for f in map(float, raw) if math.isfinite(f)]

"""The Grafana dashboard only queries metrics that sidegate.metrics really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sidegate import metrics as m

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "sidegate-dashboard.json"
METRIC = re.compile(r"\b((?:gen_ai|sidegate)_[a-z_]+)")


def exported_names() -> set[str]:
    return {s.name for fam in m.REGISTRY.collect() for s in fam.samples} | {
        fam.name + suffix
        for fam in m.REGISTRY.collect()
        for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }


def test_dashboard_queries_known_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert used, exprs
    unknown = used - exported_names() - {*m.GENAI, "gen_ai_token_type"}  # label names look alike
    assert not unknown, f"dashboard uses metrics that are not exported: {sorted(unknown)}"
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("first token", "status", "tenant", "cost", "cache", "fallback", "quota", "guard", "authz"):
        assert topic in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_ledger_and_telemetry_row() -> None:
    """The row after the gateway's internals: the ledger runner's shipper and archive, the spill and
    the lost records, each on the metric that measures it."""
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    (row,) = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Ledger & telemetry"]
    rest = panels[row + 1 :]
    assert rest and all(p["type"] != "row" for p in rest), "the row is last and holds the panels after it"
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in rest}
    want = {
        "sidegate_ledger_ship_lag_records": "lag",
        "sidegate_ledger_ship_seconds_since_insert": "insert",
        'sidegate_ledger_ship_records_total{outcome="shipped"}': "shipped",
        "sidegate_ledger_spill_bytes": "spill",
        'sidegate_ledger_records_total{outcome=~"dropped_.*"}': "dropped",
        "sidegate_ledger_archive_watermark_seconds": "watermark",
    }
    for metric, word in want.items():
        assert any(metric in e and word in t.lower() for t, e in exprs.items()), (metric, exprs)
    y = panels[row]["gridPos"]["y"]
    assert all(p["gridPos"]["y"] > y for p in rest) and sum(p["gridPos"]["w"] for p in rest) == 24

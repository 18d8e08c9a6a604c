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

"""The alert rules ship twice: a rules file for the compose Prometheus and a PrometheusRule for the
Prometheus Operator. They must not drift (the e2e dashboard test evaluates the compose file's rules
against a real Prometheus; this keeps the Kubernetes copy equal to it)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_prometheusrule_has_the_compose_rules() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "alerts.yml").read_text())
    rule = yaml.safe_load((ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == compose["groups"]
    kustomization = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    assert "prometheusrule.yaml" in kustomization["resources"]


def test_compose_prometheus_loads_the_rules() -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["alerts.yml"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/compose/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes

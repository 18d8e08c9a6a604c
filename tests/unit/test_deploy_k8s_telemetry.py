"""Kubernetes telemetry parts: the ledger runner (k8s/ledger: its Deployment, metrics Service,
ServiceMonitor and NetworkPolicy, consistent with its config), the gateway pods' spill volume and
the tracing endpoint. Schema validation and the comparison with `kubectl kustomize` run for
k8s/ledger in test_deploy_k8s.py like for every other target."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml
from test_deploy_k8s import K8S, OVERLAYS, build, by_kind, containers

from sidegate import config

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert m, quantity
    return int(m[1]) * _UNITS[m[2]]


def _config(resources: list[dict], name: str) -> config.SidegateConfig:
    (cm,) = [r for r in by_kind(resources, "ConfigMap") if r["metadata"]["name"] == name]
    return config.parse(yaml.safe_load(cm["data"]["sidegate.yaml"]), env={})


def test_ledger_runner_is_one_small_deployment_running_the_configured_jobs():
    resources = build("ledger")
    (dep,) = by_kind(resources, "Deployment")
    assert dep["spec"]["replicas"] == 1
    cfg = _config(resources, "sidegate-ledger-config")
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "config", "configMap": {"name": "sidegate-ledger-config"}} in pod["volumes"]
    (c,) = containers(dep).values()
    assert c["args"] == ["ledger", "run", "-c", "/etc/sidegate/sidegate.yaml", "--create-tables"]
    assert c["image"] == "sidegate:0.1.0"
    env = {e["name"]: e for e in c["env"]}
    assert env["SIDEGATE_REDIS_URL"]["value"] == "redis://dragonfly:6379/0"
    ship = cfg.observability.ledger_ship
    assert urlsplit(ship.url or "").scheme in {"http", "https"}
    # ClickHouse credentials: from a Secret, under the variable names the config gives.
    for var in (ship.user_env, ship.password_env):
        assert var and env[var]["valueFrom"]["secretKeyRef"]["name"] == "sidegate-clickhouse"
    # Its /metrics: the port of the config, reachable from outside the pod, probed over HTTP.
    port = cfg.observability.ledger_metrics_port
    assert cfg.services.metrics_host == "0.0.0.0"
    assert c["ports"] == [{"name": "ledger-metrics", "containerPort": port}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "ledger-metrics"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_ledger_runner_is_scraped_and_only_reaches_the_store_clickhouse_and_https():
    resources = build("ledger")
    (dep,) = by_kind(resources, "Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (svc,) = by_kind(resources, "Service")
    (sm,) = by_kind(resources, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {e["port"] for e in sm["spec"]["endpoints"]} == {p["name"] for p in svc["spec"]["ports"]}
    assert (
        svc["spec"]["ports"][0]["port"]
        == _config(resources, "sidegate-ledger-config").observability.ledger_metrics_port
    )
    (np,) = by_kind(resources, "NetworkPolicy")
    assert np["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert [r["from"][0]["namespaceSelector"] for r in np["spec"]["ingress"]] == [
        {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    ]
    assert {p["port"] for r in np["spec"]["ingress"] for p in r["ports"]} == {9466}
    egress = {p["port"] for r in np["spec"]["egress"] for p in r["ports"]}
    url = urlsplit(_config(resources, "sidegate-ledger-config").observability.ledger_ship.url or "")
    assert url.port in egress and {53, 6379, 443} <= egress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_archive_setting_agrees_between_the_gateway_and_the_runner(overlay):
    """With an archive configured the ledger writer stops bounding the stream by MAXLEN (the
    archiver trims): the gateway's and the runner's configs must agree on it."""
    gateway = _config(build(overlay), "sidegate-config").observability.ledger_archive.url
    runner = _config(build("ledger"), "sidegate-ledger-config").observability.ledger_archive.url
    assert gateway == runner


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_pods_spill_to_a_bounded_volume_larger_than_the_spill_bound(overlay):
    resources = build(overlay)
    cfg = _config(resources, "sidegate-config")
    spill = cfg.observability.ledger_spill
    (dep,) = by_kind(resources, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "ledger-spill"]
    mounting = {c["name"]: m["mountPath"] for c in containers(dep).values() for m in c.get("volumeMounts", [])
                if m["name"] == "ledger-spill"}  # fmt: skip
    assert mounting == {"extproc": spill.dir}, "the ledger writer runs in extproc"
    # Past max_bytes the writer drops (and counts); past the sizeLimit the kubelet evicts the pod.
    assert _bytes(vol["emptyDir"]["sizeLimit"]) > spill.max_bytes * cfg.services.extproc_workers > 0


def test_gateway_traces_go_to_the_configured_collector_which_the_policy_lets_out():
    resources = build("gateway")
    tracing = _config(resources, "sidegate-config").observability.tracing
    assert tracing.enabled and 0 < tracing.sample_ratio <= 1
    (cm,) = by_kind(resources, "ConfigMap")
    bootstrap = yaml.safe_load(cm["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    ep = clusters["otel_collector"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert ep["address"]["socket_address"] == {"address": tracing.host, "port_value": tracing.port}
    (np,) = by_kind(resources, "NetworkPolicy")
    assert tracing.port in {p["port"] for r in np["spec"]["egress"] for p in r["ports"]}


def test_ledger_kustomization_is_standalone_beside_an_overlay():
    kz = yaml.safe_load((K8S / "ledger" / "kustomization.yaml").read_text())
    assert not any(str(r).startswith("..") for r in kz["resources"]), "applied on its own, beside an overlay"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_ports_listen_where_the_servicemonitor_scrapes(overlay):
    """The ServiceMonitor reaches /metrics through the pod IP: a loopback bind (the default) would
    leave every panel and alert without data."""
    assert _config(build(overlay), "sidegate-config").services.metrics_host in {"0.0.0.0", "::"}

"""The Helm chart (k8s/helm/sidegate): linted and rendered by Helm's own Go SDK (PyPI
`helm-python-sdk`, libhelm in a wheel: no `helm` binary, no cluster), in both modes, with and
without the HPA, KEDA, the admin API and xDS. Every manifest is checked like the kustomize output
(tests/unit/test_deploy_k8s.py): Kubernetes schemas, the Sidegate config it mounts, Envoy's
`--mode validate` of the bootstraps it runs, probes and NetworkPolicy ports against the config, and
the pod against k8s/base (same ports, env names, security context)."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from sidegate import config
from sidegate.admin.openapi import PREFIX as ADMIN_PREFIX
from sidegate.bootstrap import render
from sidegate.config.cpus import auto_extproc_workers
from tests.render_helpers import K8S_VERSIONS, assert_envoy_validates_text, assert_valid_kubernetes

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "k8s" / "helm" / "sidegate"

NO_HPA = {"hpa": {"enabled": False}}
CASES: dict[str, dict[str, Any]] = {
    "gateway": {},
    "gateway-keda-admin": {
        "autoscaling": {**NO_HPA, "keda": {"enabled": True}},
        "admin": {"enabled": True, "tokenSecret": {"name": "sidegate-admin"}},
    },
    "gateway-hpa-active-requests": {"autoscaling": {"hpa": {"activeRequestsPerPod": "20"}}},
    "gateway-static-bare": {
        "config": {"services": {"xds": False}},
        "autoscaling": NO_HPA,
        "envoyMetrics": {"enabled": False},
        "pdb": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "store": {"existingSecret": "sidegate-store", "qdrantUrl": ""},
    },
    "gateway-embedded-store": {"store": {"embedded": True}, "replicas": 1, "autoscaling": NO_HPA},
    # the way back to the gRPC front: the separate authz service brings its container back
    "gateway-grpc-front": {"config": {"services": {"auth": "ext_authz"}}},
    "sidecar": {"mode": "sidecar"},
    "sidecar-keda": {"mode": "sidecar", "autoscaling": {**NO_HPA, "keda": {"enabled": True}}},
}
CRDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}

Resource = dict[str, Any]


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RENDER_ALL = _load("deploy_render_all_helm", ROOT / "deploy" / "render_all.py")
KUSTOMIZE = _load("deploy_k8s_for_helm", Path(__file__).parent / "test_deploy_k8s.py")


@functools.cache
def _render(values_json: str) -> tuple[Resource, ...]:
    text = RENDER_ALL.helm_manifest(json.loads(values_json))
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    return tuple(docs)


def render_chart(values: dict[str, Any] | None = None) -> list[Resource]:
    """A fresh copy of the rendered manifests (renders are cached; tests may mutate their copy)."""
    return copy.deepcopy(list(_render(json.dumps(values or {}, sort_keys=True))))


def by_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def pod_of(resources: list[Resource]) -> dict[str, Any]:
    (dep,) = by_kind(resources, "Deployment")
    return dep["spec"]["template"]["spec"]


def containers(resources: list[Resource]) -> dict[str, dict[str, Any]]:
    pod = pod_of(resources)
    return {c["name"]: c for c in pod["initContainers"] + pod["containers"]}


def mounted_config(resources: list[Resource]) -> config.SidegateConfig:
    (cm,) = by_kind(resources, "ConfigMap")
    return config.parse(yaml.safe_load(cm["data"]["sidegate.yaml"]), env={})


# -- lint and schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_chart_lints_clean(case):
    report = helm_python.lint(str(CHART), CASES[case], strict=True, kube_version="v1.30.0")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report["messages"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_manifest_is_valid_kubernetes(case):
    resources = render_chart(CASES[case])
    kinds = {r["kind"] for r in resources}
    assert {"ConfigMap", "Deployment", "Service", "ServiceAccount"} <= kinds
    for res in resources:
        assert res.get("apiVersion") and res.get("kind") and res["metadata"].get("name"), res
        if (res["apiVersion"], res["kind"]) in CRDS:
            continue
        assert_valid_kubernetes(res, case)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "mesh"}, "/mode': value must be one of 'gateway', 'sidecar'"),  # values.schema.json
        ({"autoscalling": {"hpa": {"enabled": False}}}, "additional properties 'autoscalling' not allowed"),
        ({"store": {"embedded": True}}, "store.embedded gives each pod its own store"),
        ({"store": {"embedded": True}, "replicas": 2, "autoscaling": NO_HPA}, "only with replicas: 1"),
        ({"autoscaling": {"hpa": {"minReplica": 1}}}, "additional properties 'minReplica' not allowed"),
        ({"autoscaling": {"keda": {"enabled": True}}}, "exclusive"),
        ({"admin": {"enabled": True}}, "admin.tokenSecret.name"),
        ({"mode": "sidecar", "admin": {"enabled": True, "tokenSecret": {"name": "x"}}}, "gateway-mode"),
        ({"admin": {"enabled": True, "tokenSecret": {"name": "x"}, "allowedFrom": []}}, "allowedFrom"),
        (
            {"autoscaling": {**NO_HPA, "keda": {"enabled": True}}, "envoyMetrics": {"enabled": False}},
            "envoyMetrics",
        ),
        ({"config": {"services": {"extproc_workers": 0}}}, "needs resources.extproc.limits.cpu"),
    ],
)
def test_refused_values_fail_with_a_reason(values, message):
    with pytest.raises(helm_python.HelmError, match=message):
        RENDER_ALL.helm_template(values)


# -- the config, Envoy's bootstraps, the config volume ----------------------------------------------


@pytest.mark.parametrize("case", ["gateway", "sidecar", "gateway-static-bare", "gateway-grpc-front"])
def test_mounted_config_validates_and_its_bootstraps_pass_envoy(case):
    resources = render_chart(CASES[case])
    cfg = mounted_config(resources)
    assert cfg.listener.host == ("127.0.0.1" if case.startswith("sidecar") else "0.0.0.0")
    assert cfg.services.host == "127.0.0.1" and cfg.tenants == {}
    assert cfg.services.xds is (case != "gateway-static-bare")
    # What the envoy-bootstrap init container runs (`sidegate render -c ... -o ...`) on this config.
    assert_envoy_validates_text(render.render_yaml(cfg), "envoy.yaml")
    (cm,) = by_kind(resources, "ConfigMap")
    if "envoy-metrics.yaml" in cm["data"]:
        assert_envoy_validates_text(cm["data"]["envoy-metrics.yaml"], "envoy-metrics.yaml")


@pytest.mark.parametrize(
    ("cpu", "workers"), [("4", 2), (6, 3), ("3", 1), ("2500m", 1), ("500m", 1), (0.5, 1)]
)
def test_auto_workers_are_counted_from_the_extproc_limit(cpu, workers):
    """`extproc_workers: 0` becomes a number in the mounted config: left to the pod, the bootstrap's
    init container, xds and extproc would each count their own container's CPUs."""
    values = {
        "config": {"services": {"extproc_workers": 0}},
        "resources": {"extproc": {"limits": {"cpu": cpu}}},
    }
    resources = render_chart(values)
    (cm,) = by_kind(resources, "ConfigMap")
    assert yaml.safe_load(cm["data"]["sidegate.yaml"])["services"]["extproc_workers"] == workers
    cfg = mounted_config(resources)
    assert cfg.services.extproc_workers == workers
    # the rule is the pod's own (sidegate/config/cpus.py), on the CPUs the limit gives
    millis = float(str(cpu)[:-1]) if str(cpu).endswith("m") else float(cpu) * 1000
    assert workers == auto_extproc_workers(math.ceil(millis / 1000))
    clusters = yaml.safe_load(render.render_yaml(cfg))["static_resources"]["clusters"]
    (front,) = [c for c in clusters if c["name"] == "sidegate_front"]
    assert len(front["load_assignment"]["endpoints"][0]["lb_endpoints"]) == workers


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_is_a_directory_volume_never_subpath(case):
    """The kubelet updates a ConfigMap volume by swapping its `..data` symlink; a subPath mount is
    a bind of one file and never sees the change, so the live path needs the directory."""
    resources = render_chart(CASES[case])
    (cm,) = by_kind(resources, "ConfigMap")
    pod = pod_of(resources)
    (vol,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert vol == {"name": "config", "configMap": {"name": cm["metadata"]["name"]}}
    for c in containers(resources).values():
        for m in c.get("volumeMounts", []):
            assert "subPath" not in m and "subPathExpr" not in m, (c["name"], m)
            if m["name"] == "config":
                assert m["mountPath"] == "/etc/sidegate" and m["readOnly"] is True
    cs = containers(resources)
    assert cs["envoy-bootstrap"]["args"] == [
        "render",
        "-c",
        "/etc/sidegate/sidegate.yaml",
        "-o",
        "/run/sidegate-envoy/envoy.yaml",
    ]
    assert cs["envoy"]["args"][:2] == ["-c", "/run/sidegate-envoy/envoy.yaml"]
    if mounted_config(resources).services.xds:
        assert cs["xds"]["args"] == ["serve", "xds", "-c", "/etc/sidegate/sidegate.yaml"]
        assert cs["xds"]["restartPolicy"] == "Always"
    else:
        assert "xds" not in cs


def _checksum(values: dict[str, Any]) -> str:
    (dep,) = by_kind(render_chart(values), "Deployment")
    return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config-shape"]


def test_checksum_rolls_pods_only_for_sections_that_need_a_restart():
    base = _checksum({})
    models = {"config": {"models": {"gpt-4o": {"routes": [{"provider": "openai"}]}}}}
    prices = {"config": {"quota": {"prices": {"gpt-4o": {"input": 2.5, "output": 10}}}}}
    # Live with xDS: a model, a price, a provider's URL change the ConfigMap but not the pod template.
    assert _checksum(models) == base
    assert _checksum(prices) == _checksum({"config": {"quota": {"prices": {}}}})
    assert _checksum({"config": {"providers": {"openai": {"base_url": "https://example.test"}}}}) == base
    assert _checksum({"config": {"defaults": {"cache": {"mode": "off"}}}}) == base
    # The processes' shape rolls them.
    assert _checksum({"config": {"listener": {"port": 8081}}}) != base
    assert _checksum({"config": {"quota": {"op_timeout_s": 0.5}}}) != _checksum({"config": {"quota": {}}})
    # Static bootstrap: the routes are in it, so every section does.
    static = {"config": {"services": {"xds": False}}}
    assert _checksum(static) != _checksum({**static, "config": {**static["config"], **models["config"]}})
    assert "gpt-4o" in mounted_config(render_chart(models)).models


# -- pod: probes, ports, secrets, parity with k8s/base -----------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_probes_and_ports_follow_the_config(case):
    resources = render_chart(CASES[case])
    cfg = mounted_config(resources)
    cs = containers(resources)
    svc = cfg.services
    # The default: the HTTP front with inline auth, no authz container; auth: ext_authz brings it back
    # with the gRPC front (sidegate/config/services.py).
    grpc_front = case == "gateway-grpc-front"
    assert (svc.auth, svc.front) == (("ext_authz", "ext_proc") if grpc_front else ("inline", "http"))
    assert ("authz" in cs) is grpc_front
    services = {"extproc": svc.extproc_port, **({"authz": svc.authz_port} if grpc_front else {})}
    for name, port in services.items():
        c = cs[name]
        assert c["args"] == ["serve", name, "-c", "/etc/sidegate/sidegate.yaml"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["exec"]["command"] == ["sidegate-probe", "check", name, "--port", str(port)]
        assert {"name": f"grpc-{name}", "containerPort": port} in c["ports"]
    ports = {p["name"]: p["containerPort"] for c in cs.values() for p in c.get("ports", [])}
    assert ports["extproc-metrics"] == svc.metrics_port
    assert ports.get("authz-metrics") == (svc.authz_metrics_port if grpc_front else None)
    # extproc's HTTP front, which Envoy's ext_authz HTTP filter and the try lane call (on loopback)
    assert ports.get("http-front") == (None if grpc_front else svc.front_port)
    assert ports["http"] == cfg.listener.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert cs["envoy"][probe]["exec"]["command"] == [
            "sidegate-probe",
            "check",
            "envoy",
            "--port",
            str(cfg.listener.admin_port),
        ]
    assert cs["envoy"]["lifecycle"]["preStop"]["exec"]["command"][:2] == ["sidegate-probe", "drain"]
    if "xds" in cs:
        for probe in ("startupProbe", "livenessProbe"):
            cmd = cs["xds"][probe]["exec"]["command"]
            assert cmd[:2] == ["python", "-c"] and cmd[-1] == str(svc.xds_port) == str(ports["grpc-xds"])
    if "admin" in cs:
        assert svc.admin_host == "127.0.0.1", (
            "the chart binds admin on 0.0.0.0 by flag, the config keeps its default"
        )
        assert cs["admin"]["args"][-4:] == ["--host", "0.0.0.0", "--port", str(svc.admin_port)]
        assert cs["admin"]["readinessProbe"]["httpGet"] == {
            "path": f"{ADMIN_PREFIX}/healthz",
            "port": "admin",
        }
        assert ports["admin"] == svc.admin_port
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in cs["admin"]["env"] if "valueFrom" in e}
        assert env["SIDEGATE_ADMIN_TOKEN"] == {"name": "sidegate-admin", "key": "SIDEGATE_ADMIN_TOKEN"}
    pod = pod_of(resources)
    drain = float(cs["envoy"]["args"][cs["envoy"]["args"].index("--drain-time-s") + 1])
    extproc_env = {e["name"]: e.get("value") for e in cs["extproc"]["env"]}
    assert pod["terminationGracePeriodSeconds"] > drain + float(extproc_env["SIDEGATE_DRAIN_S"])


def test_admin_healthz_is_a_real_route():
    from sidegate.admin import server

    # The admin container's readiness probe path: the public, store-checking health route.
    assert 'r.add_get(f"{PREFIX}/healthz", healthz)' in Path(server.__file__).read_text()
    assert server.PREFIX == ADMIN_PREFIX


@pytest.mark.parametrize("case", ["gateway", "sidecar"])
def test_pod_matches_the_kustomize_base(case):
    """Same ports, env names, security contexts, resources and token init as k8s/overlays/<mode>."""
    ours = render_chart(CASES[case])
    theirs = KUSTOMIZE.build(case)
    assert pod_of(ours)["securityContext"] == pod_of(theirs)["securityContext"]
    assert pod_of(ours)["terminationGracePeriodSeconds"] == pod_of(theirs)["terminationGracePeriodSeconds"]
    ours_c, theirs_c = containers(ours), containers(theirs)
    assert "authz" not in ours_c and "authz" not in theirs_c, "the HTTP front with inline auth (the default)"
    for name in ("internal-token", "extproc", "envoy"):
        a, b = ours_c[name], theirs_c[name]
        assert {e["name"] for e in a.get("env", [])} == {e["name"] for e in b.get("env", [])}, name
        assert sorted(map(str, a.get("ports", []))) == sorted(map(str, b.get("ports", []))), name
        assert a["securityContext"] == b["securityContext"], name
        assert a["resources"] == b["resources"], name
        assert a.get("restartPolicy") == b.get("restartPolicy"), name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert a.get(probe) == b.get(probe), (name, probe)
    assert ours_c["internal-token"]["args"] == theirs_c["internal-token"]["args"]
    assert ours_c["extproc"]["args"] == theirs_c["extproc"]["args"]
    want = {v["name"]: v for v in pod_of(theirs)["volumes"] if v["name"] != "config"}
    got = {v["name"]: v for v in pod_of(ours)["volumes"]}
    assert all(got[n] == v for n, v in want.items())
    if case == "sidecar":
        app_env = {e["name"]: e["value"] for e in ours_c["app"]["env"]}
        assert app_env["OPENAI_BASE_URL"] == f"http://localhost:{mounted_config(ours).listener.port}/v1"
        assert [c["name"] for c in pod_of(ours)["containers"]] == ["app"]


def test_secrets_are_references_unless_explicitly_inlined():
    resources = render_chart({})
    assert not by_kind(resources, "Secret")
    cs = containers(resources)
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in cs["extproc"]["env"] if "valueFrom" in e
    }
    cfg = mounted_config(resources)
    assert refs == {p.api_key_env: "sidegate-provider-keys" for p in cfg.providers.values() if p.api_key_env}
    assert {e["name"] for e in cs["envoy"]["env"]} == set(refs), "the direct lane: Envoy injects keys"

    stored = render_chart({"store": {"existingSecret": "store-url"}})
    env = {e["name"]: e for e in containers(stored)["extproc"]["env"]}
    assert env["SIDEGATE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "store-url",
        "key": "SIDEGATE_REDIS_URL",
    }

    inlined = render_chart(
        {"providerKeys": {"createSecret": {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "x"}}}
    )
    (secret,) = by_kind(inlined, "Secret")
    assert secret["stringData"] == {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "x"}
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in containers(inlined)["extproc"]["env"]
        if "valueFrom" in e
    }
    assert refs == {secret["metadata"]["name"]}


# -- NetworkPolicy, Services, autoscaling ------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(c for c in CASES if c != "gateway-static-bare"))
def test_networkpolicy_ports_match_the_pod(case):
    resources = render_chart(CASES[case])
    cfg = mounted_config(resources)
    cs = containers(resources)
    ports = {p["name"]: p["containerPort"] for c in cs.values() for p in c.get("ports", [])}
    (np,) = by_kind(resources, "NetworkPolicy")
    labels = by_kind(resources, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    rules = np["spec"]["ingress"]
    opened = {p["port"] for r in rules for p in r["ports"]}
    internal = {
        cfg.services.authz_port,
        cfg.services.extproc_port,
        cfg.services.front_port,
        cfg.listener.admin_port,
        cfg.services.xds_port,
    }
    assert not opened & internal, "extproc's front and gRPC ports, authz, xDS and Envoy's admin stay pod-internal"
    assert opened <= set(ports.values()), "every opened port is a container port"
    public = {p["port"] for r in rules if "from" not in r for p in r["ports"]}
    assert public == ({ports["app"]} if case.startswith("sidecar") else {cfg.listener.port})
    metric_ports = {
        p["containerPort"] for c in cs.values() for p in c.get("ports", []) if p["name"].endswith("metrics")
    }
    (monitoring,) = [r for r in rules if r.get("from", [{}])[0].get("namespaceSelector")]
    assert {p["port"] for p in monitoring["ports"]} == metric_ports
    admin_rules = [r for r in rules if any(p["port"] == cfg.services.admin_port for p in r["ports"])]
    if "admin" in cs:
        (rule,) = admin_rules
        assert rule["from"] == [{"podSelector": {"matchLabels": {"sidegate.dev/admin-client": "true"}}}]
        assert [p["port"] for p in rule["ports"]] == [cfg.services.admin_port]
    else:
        assert not admin_rules
    for svc in by_kind(resources, "Service"):
        assert svc["spec"]["selector"].items() <= labels.items()
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports and ports[p["targetPort"]] in opened, (svc["metadata"]["name"], p)


@pytest.mark.parametrize("case", sorted(CASES))
def test_autoscaling_targets_the_deployment(case):
    resources = render_chart(CASES[case])
    (dep,) = by_kind(resources, "Deployment")
    name = dep["metadata"]["name"]
    hpas, scaled = by_kind(resources, "HorizontalPodAutoscaler"), by_kind(resources, "ScaledObject")
    assert len(hpas) + len(scaled) <= 1
    assert ("replicas" in dep["spec"]) == (not hpas and not scaled), "an autoscaler owns the replica count"
    for hpa in hpas:
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        metrics = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        if CASES[case].get("autoscaling", {}).get("hpa", {}).get("activeRequestsPerPod"):
            assert metrics[0]["pods"]["metric"]["name"] == "envoy_http_downstream_rq_active"
        else:
            assert not metrics
    for so in scaled:
        assert so["apiVersion"] == "keda.sh/v1alpha1" and so["spec"]["scaleTargetRef"] == {"name": name}
        (prom,) = [t for t in so["spec"]["triggers"] if t["type"] == "prometheus"]
        # The label value is the gateway listener's stat_prefix in the bootstrap Sidegate renders.
        # (rendered static: with xDS the same listener comes over LDS from the same rendering code)
        cfg = mounted_config(resources)
        static = cfg.model_copy(update={"services": cfg.services.model_copy(update={"xds": False})})
        hcm = render.bootstrap(static)["static_resources"]["listeners"][0]["filter_chains"][0]
        prefix = hcm["filters"][0]["typed_config"]["stat_prefix"]
        query = prom["metadata"]["query"]
        assert (
            "envoy_http_downstream_rq_active" in query
            and f'envoy_http_conn_manager_prefix="{prefix}"' in query
        )
        assert f'pod=~"{name}-.*"' in query and float(prom["metadata"]["threshold"]) > 0
        assert "envoy-metrics" in containers(resources), "Prometheus must be able to scrape Envoy's stats"
    pdbs = by_kind(resources, "PodDisruptionBudget")
    for pdb in pdbs:
        assert (
            pdb["spec"]["selector"]["matchLabels"].items()
            <= dep["spec"]["template"]["metadata"]["labels"].items()
        )


def test_the_xds_probe_command_tells_listening_from_closed():
    """The xDS server binds loopback, so its probe connects from inside the container: run it."""
    import socket
    import sys

    cmd = containers(render_chart({}))["xds"]["livenessProbe"]["exec"]["command"]
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = str(srv.getsockname()[1])
        assert subprocess.run([sys.executable, *cmd[1:-1], port], timeout=10).returncode == 0
    assert subprocess.run([sys.executable, *cmd[1:-1], port], capture_output=True, timeout=10).returncode != 0


PARENT_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: myapp
spec:
  selector:
    matchLabels: {app: myapp}
  template:
    metadata:
      labels: {app: myapp}
    spec:
      serviceAccountName: {{ include "sidegate.serviceAccountName" .Subcharts.sidegate }}
      automountServiceAccountToken: false
      securityContext: {{- include "sidegate.podSecurityContext" .Subcharts.sidegate | nindent 8 }}
      initContainers:
        {{- include "sidegate.initContainers" .Subcharts.sidegate | nindent 8 }}
      containers:
        - name: myapp
          image: myapp:1.0
          env:
            - {name: OPENAI_BASE_URL, value: "http://localhost:8080/v1"}
      volumes:
        {{- include "sidegate.volumes" .Subcharts.sidegate | nindent 8 }}
"""


def test_a_parent_chart_includes_the_sidecar_containers(tmp_path: Path):
    """The library-style use (templates/_sidecar.tpl): an app's own chart depends on this one and
    includes its containers and volumes in its pod; this chart then renders no workload of its own."""
    import shutil

    parent = tmp_path / "myapp"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "sidegate")
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: myapp\nversion: 1.0.0\ndependencies:\n  - {name: sidegate, version: 0.1.0}\n"
    )
    values = {"sidegate": {"mode": "sidecar", "sidecar": {"app": {"enabled": False}}}}
    (parent / "values.yaml").write_text(yaml.safe_dump(values))
    (parent / "templates" / "deployment.yaml").write_text(PARENT_DEPLOYMENT)
    report = helm_python.lint(str(parent), strict=True, with_subcharts=True)
    assert report["errors"] == [] and not [m for m in report["messages"] if m["severity"] >= 2], report
    resources = [d for d in yaml.safe_load_all(RENDER_ALL.helm_manifest({}, parent)) if d]
    assert sorted((r["kind"], r["metadata"]["name"]) for r in resources) == [
        ("ConfigMap", "sidegate-config"),
        ("Deployment", "myapp"),
        ("ServiceAccount", "sidegate"),
    ]
    for res in resources:
        kubernetes_validate.validate(res, K8S_VERSIONS[-1], strict=True)
    cs = containers(resources)
    assert list(cs) == [
        "internal-token",
        "envoy-bootstrap",
        "extproc",
        "xds",
        "envoy-metrics",
        "envoy",
        "myapp",
    ]
    assert all(
        cs[n]["restartPolicy"] == "Always" for n in ("extproc", "xds", "envoy-metrics", "envoy")
    )
    (cm,) = by_kind(resources, "ConfigMap")
    assert {"name": "config", "configMap": {"name": cm["metadata"]["name"]}} in pod_of(resources)["volumes"]
    assert mounted_config(resources).listener.host == "127.0.0.1"
    assert pod_of(resources)["serviceAccountName"] == "sidegate"


def test_the_embedded_store_container_runs_valkey(tmp_path: Path):
    """store.embedded: the container's command, run here, starts the image's Valkey on loopback, and
    the services are pointed at it; its probe tells it from a closed port."""
    import socket
    import sys

    from sidegate.ports import free_port

    resources = render_chart(CASES["gateway-embedded-store"])
    cs = containers(resources)
    store = cs["store"]
    names = [c["name"] for c in pod_of(resources)["initContainers"]]
    assert names.index("store") < names.index("extproc"), "the store starts before the services"
    url = {e["name"]: e.get("value") for e in cs["extproc"]["env"]}["SIDEGATE_REDIS_URL"]
    assert (
        url
        == "redis://127.0.0.1:6379/0"
        == {e["name"]: e.get("value") for e in cs["xds"]["env"]}["SIDEGATE_REDIS_URL"]
    )
    assert 6379 not in {
        p["port"]
        for r in by_kind(resources, "NetworkPolicy")
        for i in r["spec"]["ingress"]
        for p in i["ports"]
    }
    port = str(free_port())
    cmd = [sys.executable, *store["command"][1:-2], port, str(tmp_path)]
    probe = [sys.executable, *store["livenessProbe"]["exec"]["command"][1:-1], port]
    assert subprocess.run(probe, capture_output=True, timeout=10).returncode != 0
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(probe, capture_output=True, timeout=10).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "Valkey did not start"
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", int(port)), 2) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(64) == b"+PONG\r\n"
        assert any(tmp_path.iterdir()), "its append-only file is on the store-data volume"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

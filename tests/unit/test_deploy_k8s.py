"""Kubernetes manifests: kustomize base + overlays, deps, mesh.

Kustomize is rendered by a tiny renderer in this module (resources, labels, configMapGenerator,
images, JSON 6902 patches: exactly the features the kustomizations use; anything else fails loudly),
so the tests need no kubectl. Where `kubectl` is installed, its `kubectl kustomize` output is compared
with the tiny renderer's, so the two cannot silently disagree. Every rendered built-in resource is
validated offline against the Kubernetes OpenAPI schemas (PyPI `kubernetes-validate`, strict mode);
CRDs (ServiceMonitor, EnvoyFilter) get shape checks here.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sidegate import config
from sidegate.bootstrap import render
from tests.render_helpers import assert_valid_kubernetes

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ["gateway", "sidecar"]
KINDS_OF_CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("networking.istio.io/v1alpha3", "EnvoyFilter"),
}
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "labels", "configMapGenerator", "images", "patches"}

Resource = dict[str, Any]


# -- tiny kustomize -------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    return (
        [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")] if path != "/" else []
    )


def _walk(doc: Any, parts: list[str]) -> tuple[Any, str]:
    for p in parts[:-1]:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc, parts[-1]


def _get(doc: Any, path: str) -> Any:
    parent, last = _walk(doc, _pointer(path))
    return parent[int(last)] if isinstance(parent, list) else parent[last]


def _remove(doc: Any, path: str) -> Any:
    parent, last = _walk(doc, _pointer(path))
    return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)


def _add(doc: Any, path: str, value: Any) -> None:
    parent, last = _walk(doc, _pointer(path))
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value


def json_patch(doc: Resource, ops: list[dict[str, Any]]) -> Resource:
    """RFC 6902 add/remove/replace/move/copy/test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op["op"], op["path"]
        if kind == "add":
            _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            _remove(doc, path)
            _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "move":
            _add(doc, path, _remove(doc, op["from"]))
        elif kind == "copy":
            _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            assert _get(doc, path) == op["value"], f"json patch test failed at {path}"
        else:
            raise AssertionError(f"unsupported json patch op {kind!r}")
    return doc


def _matches(res: Resource, target: dict[str, str]) -> bool:
    group, _, version = res["apiVersion"].rpartition("/")
    want = {"group": group, "version": version, "kind": res["kind"], "name": res["metadata"]["name"]}
    return all(want[k] == v for k, v in target.items())


def _pod_specs(res: Resource) -> list[dict[str, Any]]:
    spec = res.get("spec", {})
    return [spec["template"]["spec"]] if "template" in spec else []


def kustomize(directory: Path) -> list[Resource]:
    kz = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kz) - SUPPORTED_KEYS
    assert not unknown, f"{directory}: tiny kustomize does not support {sorted(unknown)}"
    out: list[Resource] = []
    for entry in kz.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            out.extend(kustomize(path))
        else:
            out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for gen in kz.get("configMapGenerator", []):
        assert set(gen) <= {"name", "files"}, gen
        data = {Path(f).name: (directory / f).read_text() for f in gen["files"]}
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for patch in kz.get("patches", []):
        ops = yaml.safe_load((directory / patch["path"]).read_text() if "path" in patch else patch["patch"])
        assert isinstance(ops, list), "only JSON 6902 patches are supported"
        hits = [i for i, r in enumerate(out) if _matches(r, patch["target"])]
        assert len(hits) == 1, f"patch target {patch['target']} matched {len(hits)} resources"
        out[hits[0]] = json_patch(out[hits[0]], ops)
    for spec in kz.get("labels", []):
        assert set(spec) <= {"pairs", "includeSelectors"} and not spec.get("includeSelectors"), spec
        for res in out:
            res["metadata"].setdefault("labels", {}).update(spec["pairs"])
    for img in kz.get("images", []):
        for res in out:
            for pod in _pod_specs(res):
                for c in pod.get("initContainers", []) + pod.get("containers", []):
                    name, _, tag = c["image"].partition(":")
                    if name == img["name"]:
                        c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"
    return out


def build(name: str) -> list[Resource]:
    return kustomize(K8S / "overlays" / name) if name in OVERLAYS else kustomize(K8S / name)


def by_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def containers(dep: Resource) -> dict[str, dict[str, Any]]:
    pod = dep["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}


# -- tests --------------------------------------------------------------------------------------


def test_json_patch_ops():
    doc = {"a": [1, 2], "b": {"c/d": 1}}
    out = json_patch(
        doc,
        [
            {"op": "move", "from": "/a/0", "path": "/a/-"},
            {"op": "replace", "path": "/b/c~1d", "value": 2},
            {"op": "copy", "from": "/b", "path": "/e"},
            {"op": "remove", "path": "/e/c~1d"},
            {"op": "test", "path": "/a", "value": [2, 1]},
        ],
    )
    assert out == {"a": [2, 1], "b": {"c/d": 2}, "e": {}}
    assert doc == {"a": [1, 2], "b": {"c/d": 1}}


@pytest.mark.parametrize("target", [*OVERLAYS, "deps", "mesh", "ledger"])
def test_builtin_resources_validate_against_kubernetes_schemas(target):
    resources = build(target)
    assert resources
    checked = 0
    for res in resources:
        if (res["apiVersion"], res["kind"]) in KINDS_OF_CRDS:
            continue
        assert_valid_kubernetes(res, target)
        checked += 1
    assert checked or target == "mesh"


def test_schema_validation_catches_mistakes():
    dep = copy.deepcopy(by_kind(build("gateway"), "Deployment")[0])
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["bogus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.37.0", strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_holds_the_config_and_its_rendered_bootstrap(overlay):
    (cm,) = by_kind(build(overlay), "ConfigMap")
    cfg = config.parse(yaml.safe_load(cm["data"]["sidegate.yaml"]), env={})
    assert cm["data"]["envoy.yaml"] == render.render_yaml(cfg), (
        f"k8s/overlays/{overlay}/envoy.yaml is stale: run `python deploy/render_all.py`"
    )
    dep = by_kind(build(overlay), "Deployment")[0]
    assert {"name": "config", "configMap": {"name": cm["metadata"]["name"]}} in dep["spec"]["template"][
        "spec"
    ]["volumes"]
    # Envoy's listener: reachable through the Service in gateway mode, loopback-only as a sidecar.
    assert cfg.listener.host == ("0.0.0.0" if overlay == "gateway" else "127.0.0.1")
    # extproc's HTTP front and gRPC port: loopback only (other containers of the pod need the
    # internal token too).
    assert cfg.services.host == "127.0.0.1"
    assert cfg.services.internal_token_file == "/run/sidegate/internal-token.yaml"
    assert cfg.tenants == {}, "no example tenant key ships with a production manifest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_shape_probes_and_ports_follow_the_config(overlay):
    resources = build(overlay)
    (cm,) = by_kind(resources, "ConfigMap")
    cfg = config.parse(yaml.safe_load(cm["data"]["sidegate.yaml"]), env={})
    (dep,) = by_kind(resources, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    cs = containers(dep)
    first, *native = pod["initContainers"]
    sidecars = [c["name"] for c in native]
    # The HTTP front with inline auth (the default): extproc checks the tenant keys, no authz container.
    assert (cfg.services.front, cfg.services.auth) == ("http", "inline")
    if overlay == "gateway":
        assert sidecars == ["extproc"] and [c["name"] for c in pod["containers"]] == ["envoy"]
    else:
        assert sidecars == ["extproc", "envoy"] and [c["name"] for c in pod["containers"]] == ["app"]
        env = {e["name"]: e.get("value") for e in cs["app"]["env"]}
        assert env["OPENAI_BASE_URL"] == f"http://localhost:{cfg.listener.port}/v1"
    assert all(c.get("restartPolicy") == "Always" for c in native), "native sidecars"

    # The internal token: written once per pod before the sidecars start, to a volume that Envoy
    # and the services mount and nothing else does (the sidecar overlay's app container included).
    assert first["name"] == "internal-token" and "restartPolicy" not in first
    token_dir = str(Path(cfg.services.internal_token_file).parent)
    assert first["args"] == ["internal-token", "-o", cfg.services.internal_token_file, "--keep"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "internal"]
    assert volume["emptyDir"]["medium"] == "Memory"
    mounting = {c["name"] for c in [*pod["initContainers"], *pod["containers"]]
                if any(m["name"] == "internal" and m["mountPath"] == token_dir for m in c.get("volumeMounts", []))}  # fmt: skip
    assert mounting == {"internal-token", "extproc", "envoy"}

    ports = {"extproc": cfg.services.extproc_port}
    services = {"extproc": "envoy.service.ext_proc.v3.ExternalProcessor"}
    for name, port in ports.items():
        c = cs[name]
        assert c["args"] == ["serve", name, "-c", "/etc/sidegate/sidegate.yaml"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # in the container: loopback
            assert c[probe]["exec"]["command"] == ["sidegate-probe", "check", name, "--port", str(port)], (name, probe)
        assert services[name]  # what `sidegate-probe check <name>` asks the health service about
        assert any(p["containerPort"] == port for p in c["ports"])
        env = {e["name"]: e for e in c["env"]}
        assert env["SIDEGATE_REDIS_URL"]["value"].startswith("redis://")
    metrics = {p["name"]: p["containerPort"] for c in cs.values() for p in c.get("ports", [])}
    assert metrics["extproc-metrics"] == cfg.services.metrics_port and "authz-metrics" not in metrics
    # the front Envoy posts to: extproc's, on the pod's loopback (the bootstrap's sidegate_front cluster)
    assert metrics["http-front"] == cfg.services.front_port
    boot = yaml.safe_load(cm["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    front = clusters["sidegate_front"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert front["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": cfg.services.front_port}
    assert {p["containerPort"] for p in cs["envoy"]["ports"]} == {cfg.listener.port}

    envoy = cs["envoy"]
    assert envoy["command"] == ["envoy"] and envoy["args"][:2] == ["-c", "/etc/sidegate/envoy.yaml"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        cmd = envoy[probe]["exec"]["command"]
        assert cmd[:3] == ["sidegate-probe", "check", "envoy"] and str(cfg.listener.admin_port) in cmd
    assert envoy["lifecycle"]["preStop"]["exec"]["command"][:2] == ["sidegate-probe", "drain"]
    drain_s = float(envoy["args"][envoy["args"].index("--drain-time-s") + 1])
    extproc_env = {e["name"]: e.get("value") for e in cs["extproc"]["env"]}
    assert pod["terminationGracePeriodSeconds"] > drain_s + float(extproc_env["SIDEGATE_DRAIN_S"])
    assert extproc_env["SIDEGATE_QDRANT_URL"].startswith("http://")

    # Provider keys come from a Secret, by the variable names the config declares.
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in cs["extproc"]["env"] if "valueFrom" in e
    }
    wanted = {p.api_key_env for p in cfg.providers.values() if p.api_key_env}
    assert wanted and wanted <= set(secret_env) and set(secret_env.values()) == {"sidegate-provider-keys"}
    # Envoy too: it injects them itself on the direct and try lanes.
    envoy_secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in envoy["env"] if "valueFrom" in e}
    assert wanted <= set(envoy_secret_env)
    assert {r["name"] for r in envoy_secret_env.values()} == {"sidegate-provider-keys"}

    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    for c in cs.values():
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]
        if c["name"] != "app":
            assert c["image"] == "sidegate:0.1.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_pdb_networkpolicy_servicemonitor(overlay):
    resources = build(overlay)
    (dep,) = by_kind(resources, "Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (hpa,) = by_kind(resources, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    (pdb,) = by_kind(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["maxUnavailable"] == 1

    (np,) = by_kind(resources, "NetworkPolicy")
    assert np["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    open_ports = {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]}
    assert not open_ports & {9001, 9002, 9004, 9901}, "extproc's ports and Envoy admin must stay pod-internal"
    public = {p["port"] for rule in np["spec"]["ingress"] if "from" not in rule for p in rule["ports"]}
    assert public == ({8080} if overlay == "gateway" else {8000})

    (sm,) = by_kind(resources, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    metric_svcs = [
        s
        for s in by_kind(resources, "Service")
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(metric_svcs) == 1
    svc_ports = {p["name"] for p in metric_svcs[0]["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} == svc_ports
    assert metric_svcs[0]["spec"]["selector"].items() <= labels.items()

    services = {s["metadata"]["name"]: s for s in by_kind(resources, "Service")}
    if overlay == "gateway":
        assert services["sidegate"]["spec"]["ports"][0]["port"] == 8080
    else:
        assert (
            "sidegate" not in services
            and services["example-app"]["spec"]["selector"].items() <= labels.items()
        )


def test_deps_dragonfly_and_qdrant():
    resources = build("deps")
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    assert {
        ("StatefulSet", "dragonfly"),
        ("Service", "dragonfly"),
        ("StatefulSet", "qdrant"),
        ("Service", "qdrant"),
    } <= names
    images = [c["image"] for r in resources for pod in _pod_specs(r) for c in pod["containers"]]
    assert all(re.search(r":v\d+\.\d+\.\d+$", i) for i in images), images
    dep = by_kind(build("gateway"), "Deployment")[0]
    env = {e["name"]: e.get("value", "") for c in containers(dep).values() for e in c.get("env", [])}
    assert env["SIDEGATE_REDIS_URL"] == "redis://dragonfly:6379/0"
    assert env["SIDEGATE_QDRANT_URL"] == "http://qdrant:6333"


def test_envoyfilters_have_the_istio_shape():
    efs = build("mesh")
    assert {e["metadata"]["name"] for e in efs} == {"sidegate-inbound", "sidegate-outbound"}
    for ef in efs:
        assert (ef["apiVersion"], ef["kind"]) == ("networking.istio.io/v1alpha3", "EnvoyFilter")
        assert set(ef["spec"]) == {"workloadSelector", "configPatches"}
        assert ef["spec"]["workloadSelector"]["labels"]
        for p in ef["spec"]["configPatches"]:
            assert set(p) == {"applyTo", "match", "patch"}
            assert p["applyTo"] in {"CLUSTER", "HTTP_FILTER"}
            assert p["match"]["context"] in {"SIDECAR_INBOUND", "SIDECAR_OUTBOUND"}
            assert p["patch"]["operation"] in {"ADD", "INSERT_BEFORE", "MERGE"}
            value = p["patch"]["value"]
            assert value["name"]
            if p["applyTo"] == "HTTP_FILTER":
                sub = p["match"]["listener"]["filterChain"]["filter"]
                assert sub["name"] == "envoy.filters.network.http_connection_manager"
                assert sub["subFilter"]["name"] == "envoy.filters.http.router"
                assert value["typed_config"]["@type"].startswith(
                    "type.googleapis.com/envoy.extensions.filters.http."
                )


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: tiny renderer only")
@pytest.mark.parametrize("target", [*OVERLAYS, "deps", "mesh", "ledger"])
def test_tiny_renderer_agrees_with_kubectl_kustomize(target):
    path = K8S / "overlays" / target if target in OVERLAYS else K8S / target
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and "unknown command" in out.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for name in {r["metadata"]["name"] for r in build(target) if r["kind"] == "ConfigMap"}:
        text = re.sub(rf"\b{re.escape(name)}-[a-z0-9]{{10}}\b", name, text)  # drop the content hash suffix

    def key(r: Resource) -> tuple[str, str]:
        return r["kind"], r["metadata"]["name"]

    theirs = sorted((d for d in yaml.safe_load_all(text) if d), key=key)
    ours = sorted(build(target), key=key)
    assert [key(r) for r in theirs] == [key(r) for r in ours]
    for a, b in zip(theirs, ours, strict=True):
        assert a == b, key(a)

"""Every Envoy config in the repository is current (matches `sidegate render`) and passes
`envoy --mode validate`, including the mesh snippets and EnvoyFilter patches merged into a bootstrap."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.render_helpers import TOKEN_FILE, assert_envoy_validates_text

ROOT = Path(__file__).resolve().parents[2]


def _render_all() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_render_all", ROOT / "deploy" / "render_all.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RENDER_ALL = _render_all()
BOOTSTRAP_FILES = sorted(RENDER_ALL.BOOTSTRAPS)


def _validate(path: Path) -> None:
    """`envoy --mode validate`, with the internal token file the config names (Envoy checks that
    it exists; in a pod it is written at start) pointed at a real one."""
    text = path.read_text()
    assert TOKEN_FILE in text, "every Sidegate cluster sets the internal token"
    assert_envoy_validates_text(text, path.name)


@pytest.mark.parametrize("rel", sorted(RENDER_ALL.expected_files()))
def test_committed_file_matches_the_renderer(rel):
    expected = RENDER_ALL.expected_files()[rel]
    path = ROOT / rel
    assert path.exists(), f"{rel} missing: run `python deploy/render_all.py`"
    assert path.read_text() == expected, f"{rel} is stale: run `python deploy/render_all.py`"


def test_every_envoy_yaml_in_the_repo_is_known():
    found = {
        str(p.relative_to(ROOT))
        for p in [
            *ROOT.glob("envoy/*.yaml"),
            *ROOT.glob("k8s/**/envoy.yaml"),
            ROOT / "deploy/compose/envoy.yaml",
        ]
    }
    assert found <= set(BOOTSTRAP_FILES), found - set(BOOTSTRAP_FILES)
    assert not (ROOT / "envoy" / "__init__.py").exists()


@pytest.mark.parametrize("rel", BOOTSTRAP_FILES)
def test_committed_bootstrap_passes_envoy_validate(rel):
    _validate(ROOT / rel)


def _minimal_bootstrap(
    http_filters: list[Any], upstream_filters: list[Any], clusters: list[Any]
) -> dict[str, Any]:
    """A listener routing everything to a dummy cluster, with the given Sidegate pieces merged in."""
    router: dict[str, Any] = {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    if upstream_filters:
        router["upstream_http_filters"] = upstream_filters
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "mesh",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "dummy"}}],
                }
            ]
        },
        "http_filters": [*http_filters, {"name": "envoy.filters.http.router", "typed_config": router}],
    }
    dummy = {
        "name": "dummy",
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "dummy",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "upstream.invalid", "port_value": 80}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    return {
        "node": {"id": "mesh", "cluster": "mesh"},  # a sidecar has one (file-based SDS needs it)
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "mesh",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [dummy, *clusters],
        },
    }


def _snippets() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "k8s/mesh/envoy-snippets.yaml").read_text())
    assert set(doc) == {"http_filters", "upstream_http_filters", "clusters"}
    return doc


def test_mesh_snippets_merged_into_a_bootstrap_pass_envoy_validate(tmp_path):
    s = _snippets()
    names = [f["name"] for f in s["http_filters"]]
    # first: the config version header's filter (a client's own value removed: sidegate/bootstrap/version.py)
    # the gRPC front with inline auth (deploy/render_all.py MESH_SERVICES): the gateway ext_proc checks
    # the tenant key, so no ext_authz filter and no authz cluster
    assert names[:4] == ["sidegate.config_version", "envoy.filters.http.decompressor", "sidegate.inflated_limit",
                         "sidegate.gateway"] and "envoy.filters.http.ext_authz" not in names
    assert s["upstream_http_filters"][-1]["name"] == "envoy.filters.http.upstream_codec"
    assert {c["name"] for c in s["clusters"]} == {"sidegate_extproc"}
    f = tmp_path / "merged.yaml"
    f.write_text(
        yaml.safe_dump(_minimal_bootstrap(s["http_filters"], s["upstream_http_filters"], s["clusters"]))
    )
    _validate(f)


def test_snippets_without_the_upstream_filter_still_validate(tmp_path):
    """The inbound EnvoyFilter adds only the downstream filters and the clusters."""
    s = _snippets()
    f = tmp_path / "merged.yaml"
    f.write_text(yaml.safe_dump(_minimal_bootstrap(s["http_filters"], [], s["clusters"])))
    _validate(f)


@pytest.mark.parametrize("name", ["inbound", "outbound"])
def test_envoyfilter_patches_applied_to_a_bootstrap_pass_envoy_validate(tmp_path, name):
    """Apply the EnvoyFilter's patches the way Istio does (ADD cluster, INSERT_BEFORE / MERGE router)."""
    ef = yaml.safe_load((ROOT / f"k8s/mesh/envoyfilter-{name}.yaml").read_text())
    boot = _minimal_bootstrap([], [], [])
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for p in ef["spec"]["configPatches"]:
        op, value = p["patch"]["operation"], copy.deepcopy(p["patch"]["value"])
        if p["applyTo"] == "CLUSTER":
            assert op == "ADD"
            boot["static_resources"]["clusters"].append(value)
            continue
        names = [f["name"] for f in hcm["http_filters"]]
        at = names.index(p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"])
        if op == "INSERT_BEFORE":
            hcm["http_filters"].insert(at, value)
        else:
            assert op == "MERGE"
            hcm["http_filters"][at]["typed_config"].update(value["typed_config"])
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters == [*(f["name"] for f in _snippets()["http_filters"]), "envoy.filters.http.router"]
    if name == "outbound":
        assert (
            hcm["http_filters"][-1]["typed_config"]["upstream_http_filters"]
            == _snippets()["upstream_http_filters"]
        )
    f = tmp_path / "patched.yaml"
    f.write_text(yaml.safe_dump(boot))
    _validate(f)

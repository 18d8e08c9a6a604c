"""Envoy's `/config_dump` against a fresh render of the same configuration ("one source of truth").

Both sides are parsed into the xDS proto messages (xds-protos) before they are compared, so the
differences that do not matter (field order, `5s` vs `5.000s`, defaults spelled out or not) vanish
and every one that does is a failure naming the resource and the first differing fields.
"""

from __future__ import annotations

import difflib
import importlib
import json
import pkgutil
from typing import Any

import httpx
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

KINDS: dict[str, type[Message]] = {
    "clusters": cluster_pb2.Cluster,
    "listeners": listener_pb2.Listener,
    "routes": route_pb2.RouteConfiguration,
}
_loaded: set[str] = set()


def _load_types(obj: Any) -> None:
    """Import the proto modules of every `@type` in `obj`, so json_format can resolve the Any fields."""
    if isinstance(obj, dict):
        t = obj.get("@type")
        if isinstance(t, str):
            package = t.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if package not in _loaded:
                _loaded.add(package)
                try:
                    mod = importlib.import_module(package)
                    for info in pkgutil.iter_modules(mod.__path__):
                        if info.name.endswith("_pb2"):
                            importlib.import_module(f"{package}.{info.name}")
                except ImportError:
                    pass  # json_format names the unknown type itself
        for v in obj.values():
            _load_types(v)
    elif isinstance(obj, list):
        for v in obj:
            _load_types(v)


def as_proto(kind: str, data: dict[str, Any]) -> tuple[Message, dict[str, Any]]:
    """`data` as its message, and apart (by path, as plain JSON) what the installed xds-protos
    cannot hold: fields and extension types Envoy 1.40 knows and it does not yet
    (`retry_policy.refresh_cluster_on_retry`, the priority_group cluster specifier...)."""
    data = {k: v for k, v in data.items() if k != "@type"}  # the dump names each resource's type
    _load_types(data)
    unknown: dict[str, Any] = {}
    known = _split(data, KINDS[kind].DESCRIPTOR, kind, unknown)
    return json_format.ParseDict(known, KINDS[kind]()), unknown


_OPAQUE = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
_PLACEHOLDER = {"@type": "type.googleapis.com/google.protobuf.Empty"}


def _split(data: Any, desc: Descriptor, path: str, out: dict[str, Any]) -> Any:
    """`data` without what `desc` (and the types it reaches) does not know; that goes to `out`."""
    if not isinstance(data, dict) or desc.full_name in _OPAQUE:
        return data
    if desc.full_name == "google.protobuf.Any":
        t = str(data.get("@type", ""))
        try:
            desc = descriptor_pool.Default().FindMessageTypeByName(t.rsplit("/", 1)[-1])
        except KeyError:
            out[path] = data  # a type not even known: the whole value compared as JSON
            return _PLACEHOLDER
    by_json = {f.json_name: f for f in desc.fields}
    kept: dict[str, Any] = {}
    for key, value in data.items():
        f = desc.fields_by_name.get(key) or by_json.get(key)
        if key == "@type" or (f is not None and f.message_type is None):
            kept[key] = value
        elif f is None:
            out[f"{path}.{key}"] = value
        elif f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            kept[key] = {k: v if vf.message_type is None else _split(v, vf.message_type, f"{path}.{key}[{k}]", out)
                         for k, v in (value or {}).items()}  # fmt: skip
        elif isinstance(value, list):
            kept[key] = [_split(v, f.message_type, f"{path}.{key}[{i}]", out) for i, v in enumerate(value)]
        else:
            kept[key] = _split(value, f.message_type, f"{path}.{key}", out)
    return kept


def config_dump(admin_url: str) -> dict[str, Any]:
    return httpx.get(admin_url + "/config_dump", timeout=10).json()


_TYPED_STRUCTS = {
    "type.googleapis.com/xds.type.v3.TypedStruct",
    "type.googleapis.com/udpa.type.v1.TypedStruct",
}


def untyped(obj: Any) -> Any:
    """`obj` with every TypedStruct replaced by the typed value it stands for: the xDS server sends
    the extensions xds-protos has no message for as TypedStruct (JSON in a Struct), which Envoy
    converts into the real type, and its dump shows as sent."""
    if isinstance(obj, list):
        return [untyped(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.get("@type") in _TYPED_STRUCTS and "type_url" in obj:
        return untyped({"@type": obj["type_url"], **(obj.get("value") or {})})
    return {k: untyped(v) for k, v in obj.items()}


def dumped(dump: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The dump's active listeners, clusters and route configurations (static and dynamic), by name,
    TypedStructs unwrapped (`untyped`)."""
    dump = untyped(dump)
    out: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
    for section in dump["configs"]:
        for c in section.get("static_clusters", []) + section.get("dynamic_active_clusters", []):
            out["clusters"][c["cluster"]["name"]] = c["cluster"]
        for lst in section.get("static_listeners", []):
            out["listeners"][lst["listener"]["name"]] = lst["listener"]
        for lst in section.get("dynamic_listeners", []):
            if "active_state" in lst:
                out["listeners"][lst["name"]] = lst["active_state"]["listener"]
        for rc in section.get("static_route_configs", []) + section.get("dynamic_route_configs", []):
            out["routes"][rc["route_config"].get("name", "")] = rc["route_config"]
    return out


def rendered_static(bootstrap: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """A rendered bootstrap's static listeners and clusters, by name (as `dumped`)."""
    res = bootstrap.get("static_resources", {})
    return {
        "clusters": {c["name"]: c for c in res.get("clusters", [])},
        "listeners": {x["name"]: x for x in res.get("listeners", [])},
        "routes": {},
    }


def differences(dump: dict[str, dict[str, dict[str, Any]]], rendered: dict[str, dict[str, dict[str, Any]]],
                kinds: tuple[str, ...] = ("clusters", "listeners", "routes")) -> list[str]:  # fmt: skip
    """What differs between Envoy's resources and the rendered ones (empty: they match)."""
    problems: list[str] = []
    for kind in kinds:
        have, want = dump[kind], rendered[kind]
        if kind == "routes" and not want:
            continue  # inline in the rendered listener: compared with it
        for name in sorted(set(have) ^ set(want)):
            problems.append(f"{kind} {name!r}: {'only in Envoy' if name in have else 'not in Envoy'}")
        for name in sorted(set(have) & set(want)):
            (a, ua), (b, ub) = as_proto(kind, have[name]), as_proto(kind, want[name])
            if _canonical(a) != _canonical(b):  # not a != b: an Any's bytes may order its maps either way
                problems.append(f"{kind} {name!r} differs:\n{_diff(a, b)}")
            if ua != ub:
                keys = sorted(k for k in set(ua) | set(ub) if ua.get(k) != ub.get(k))
                problems.append(
                    f"{kind} {name!r} differs in {', '.join(f'{k}: {ua.get(k)!r} != {ub.get(k)!r}' for k in keys[:5])}"
                )
    return problems


def _canonical(m: Message) -> str:
    return json.dumps(
        json_format.MessageToDict(m, preserving_proto_field_name=True), indent=1, sort_keys=True
    )


def _diff(envoy: Message, rendered: Message, lines: int = 40) -> str:
    a, b = _canonical(envoy).splitlines(), _canonical(rendered).splitlines()
    d = difflib.unified_diff(a, b, "envoy", "rendered", lineterm="", n=1)
    return "\n".join(list(d)[:lines])


def static_render(cfg: Any, token_file: str) -> dict[str, dict[str, dict[str, Any]]]:
    """What a fresh start of `cfg` renders into a static bootstrap (`sidegate up` points Envoy at
    the token file of its work directory)."""
    from sidegate.bootstrap import render

    services = cfg.services.model_copy(update={"internal_token_file": token_file})
    return rendered_static(render.bootstrap(cfg.model_copy(update={"services": services})))


def expected(r: Any, version: int, doc: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """What a fresh start of replica `r` with routing document `doc` (version `version`) gives
    Envoy: in xDS mode the xDS bootstrap's static clusters plus the listener, routes and clusters
    rendered for that version; else the static bootstrap's resources."""
    from sidegate.bootstrap import render
    from sidegate.config.routing import with_routing

    token_file = str(r.sup.workdir / "internal-token.yaml")
    cfg = with_routing(r.sup.cfg, doc)
    if not (cfg.services.xds and hasattr(render, "resources")):
        return static_render(cfg, token_file)
    cfg = cfg.model_copy(
        update={"services": cfg.services.model_copy(update={"internal_token_file": token_file})}
    )
    res = render.resources(cfg, xds_version=version)
    static = render.xds_bootstrap(cfg)["static_resources"]["clusters"]
    return {
        "clusters": {c["name"]: c for c in static + res.clusters},
        "listeners": {res.listener["name"]: res.listener},
        "routes": {res.route_config["name"]: res.route_config},
    }


def render_differences(r: Any, version: int, doc: dict[str, Any]) -> list[str]:
    """Replica `r`'s Envoy against a fresh render of its config with `doc` (empty: they match)."""
    return differences(dumped(config_dump(r.admin_url)), expected(r, version, doc))

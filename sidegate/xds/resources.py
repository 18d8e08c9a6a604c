"""The rendered listener, routes and clusters as xDS resources (protobuf `Any`s), one snapshot per
routing document version.

The dicts come from the same function as the static bootstrap's (`render.resources`); they become
messages through `json_format` (whose `Any` fields need every `@type`'s module imported: each
type URL names its package, and every `*_pb2` module of that package is imported once). This runs
when a version changes, never per request.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

import xds.type.v3.typed_struct_pb2  # noqa: F401 - registers TypedStruct for json_format
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from sidegate.bootstrap import render
from sidegate.config import SidegateConfig

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
SHORT = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS"}

TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"

_imported: dict[str, bool] = {}


def _known(url: str) -> bool:
    """Whether the message `url` names can be built here: every `*_pb2` module of its package is
    imported (once), so json_format's `Any` handling finds it in the default descriptor pool."""
    package = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if package not in _imported:
        _imported[package] = True
        try:
            pkg = importlib.import_module(package)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if mod.name.endswith("_pb2"):
                    importlib.import_module(f"{package}.{mod.name}")
        except ImportError:
            _imported[package] = False
    return _imported[package]


def _typed(node: Any) -> Any:
    """`node` with every extension config whose message xds-protos lacks (1.85 has no
    priority_group cluster specifier, no sse_to_metadata) wrapped in a `TypedStruct`: Envoy builds
    the real message from it with its own descriptors, and refuses it (a NACK) if it is wrong."""
    if isinstance(node, list):
        return [_typed(v) for v in node]
    if not isinstance(node, dict):
        return node
    url = node.get("@type")
    if url == TYPED_STRUCT:  # (already wrapped: what is inside is Envoy's to read)
        return node
    if isinstance(url, str) and not _known(url):
        return {
            "@type": TYPED_STRUCT,
            "type_url": url,
            "value": {k: v for k, v in node.items() if k != "@type"},
        }
    return {k: _typed(v) for k, v in node.items()}


NEWER_FIELDS: dict[str, dict[str, tuple[int, int]]] = {
    "envoy.config.route.v3.RetryPolicy": {"refresh_cluster_on_retry": (14, 0)},
}
"""Fields of Envoy 1.40's API that xds-protos 1.85's messages lack: {message: {field: (number,
wire type 0 = varint)}} (numbers read from the descriptors embedded in Envoy's binary). They are
sent as the message's unknown fields, which Envoy reads as the real ones."""


def _split_newer(
    node: Any, desc: Any, path: tuple[Any, ...], out: list[tuple[tuple[Any, ...], bytes]]
) -> None:
    """Take NEWER_FIELDS out of `node` (parsed into `desc`), each as (path, encoded field)."""
    if (
        not isinstance(node, dict)
        or desc.full_name == "google.protobuf.Any"
        or desc.full_name.startswith("google.protobuf.")
    ):
        return
    for name, (number, _) in NEWER_FIELDS.get(desc.full_name, {}).items():
        if name in node and name not in desc.fields_by_name:
            value = int(node.pop(name))
            out.append((path, _varint(number << 3) + _varint(value)))
    for key, value in node.items():
        f = desc.fields_by_name.get(key)
        if f is None or f.message_type is None:
            continue
        if f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            if vf.message_type is not None:
                for k, v in value.items():
                    _split_newer(v, vf.message_type, (*path, key, k), out)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                _split_newer(v, f.message_type, (*path, key, i), out)
        else:
            _split_newer(value, f.message_type, (*path, key), out)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def to_message(data: dict[str, Any], message: type[Message]) -> Message:
    """A rendered dict as its message (raises json_format.ParseError naming the bad field)."""
    data = _typed(data)
    newer: list[tuple[tuple[Any, ...], bytes]] = []
    _split_newer(data, message.DESCRIPTOR, (), newer)
    msg = json_format.ParseDict(data, message())
    for path, raw in newer:
        sub: Any = msg
        for step in path:
            sub = sub[step] if isinstance(step, int) or not hasattr(sub, step) else getattr(sub, step)
        sub.MergeFromString(raw)  # an unknown field to this library, a known one to Envoy
    return msg


def digest(resources: dict[str, any_pb2.Any]) -> str:
    """The identity of a set of resources (deterministic serialization, by name)."""
    h = hashlib.sha256()
    for name in sorted(resources):
        h.update(name.encode() + b"\0" + resources[name].value + b"\0")
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Snapshot:
    """What Envoy should have for routing document `version`: {type URL: {name: resource}}."""

    version: int
    resources: dict[str, dict[str, any_pb2.Any]]
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.version}:" + ":".join(self.digests[t] for t in (LISTENER, ROUTE, CLUSTER))


def _packed(items: list[tuple[str, Message]]) -> dict[str, any_pb2.Any]:
    out = {}
    for name, msg in items:
        a = any_pb2.Any(type_url=f"type.googleapis.com/{msg.DESCRIPTOR.full_name}",
                        value=msg.SerializeToString(deterministic=True))  # fmt: skip
        out[name] = a
    return out


def snapshot(cfg: SidegateConfig, version: int) -> Snapshot:
    """Render `cfg` (the file's config with routing document `version` in place) as xDS resources."""
    res = render.resources(cfg, xds_version=version)
    resources = {
        LISTENER: _packed([(res.listener["name"], to_message(res.listener, Listener))]),
        ROUTE: _packed([(res.route_config["name"], to_message(res.route_config, RouteConfiguration))]),
        CLUSTER: _packed([(c["name"], to_message(c, Cluster)) for c in res.clusters]),
    }
    return Snapshot(version, resources, {t: digest(r) for t, r in resources.items()})

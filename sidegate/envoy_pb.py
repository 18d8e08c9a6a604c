"""Small builders over the protoc-generated (upb) Envoy messages used on the hot path.

Only `xds-protos` / `protobuf` classes here (DEVELOPERS.md point 5): no betterproto on the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from google.protobuf.struct_pb2 import Struct

OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD


def header_options(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[HeaderValueOption]:
    """Set (overwrite) headers; values go in `raw_value` (a `value=` header arrives empty)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [
        HeaderValueOption(header=HeaderValue(key=k, raw_value=v.encode()), append_action=OVERWRITE)
        for k, v in items
    ]


def authz_header_options(headers: Mapping[str, str]) -> list[HeaderValueOption]:
    """Headers for ext_authz responses: there Envoy reads `value` (a `raw_value` arrives empty)."""
    return [HeaderValueOption(header=HeaderValue(key=k, value=v), append_action=OVERWRITE) for k, v in headers.items()]


def headers_to_dict(header_map) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """An Envoy HeaderMap -> {lower-case name: value} (last value wins; Envoy sends raw_value)."""
    out: dict[str, str] = {}
    for h in header_map.headers:
        out[h.key] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


def struct(fields: Mapping[str, object]) -> Struct:
    s = Struct()
    s.update(fields)
    return s


def value_to_py(v):  # type: ignore[no-untyped-def]
    """A google.protobuf.Value -> plain Python (faster than json_format.MessageToDict on the hot path)."""
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        return v.number_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [value_to_py(x) for x in v.list_value.values]
    return None


def struct_to_dict(s) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {k: value_to_py(v) for k, v in s.fields.items()}

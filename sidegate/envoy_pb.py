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

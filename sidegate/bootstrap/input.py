"""Envoy config for what a client may send before any Sidegate filter reads it: compressed
request bodies and the replies Envoy gives to input it refuses itself (415, 431).

gzip request bodies are accepted, as the OpenAI and Anthropic APIs accept them: Envoy's
decompressor filter, first in the chain, inflates the body and drops ``content-encoding`` and
``content-length``, so every later filter (ext_authz, the gateway, the direct lane) and the
provider see the plain JSON, and the inflated size is what counts against
``listener.max_request_bytes``: a ``buffer`` filter right after the decompressor holds the inflated
body under that limit, so Envoy itself answers a zip bomb with 413 (see :func:`inflated_limit_filter`).
Any other encoding (``br``, ``deflate``, ``zstd``...) is refused with 415 by a route before any
filter reads the body.
"""

from __future__ import annotations

from typing import Any

from sidegate.bootstrap.buffers import ANSWER_LIMIT_FILTER
from sidegate.config import SidegateConfig
from sidegate.wire import AUTHZ_NS, FRONT_FILTER, GATEWAY_FILTER

INFLATED_LIMIT_FILTER = "sidegate.inflated_limit"

_BUFFER_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
_DISABLED = {
    INFLATED_LIMIT_FILTER: _BUFFER_PER_ROUTE,
    AUTHZ_NS: "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
    FRONT_FILTER: "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
    GATEWAY_FILTER: "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
    # (it would buffer the whole body before the router answers: the client would have to send it)
    ANSWER_LIMIT_FILTER: _BUFFER_PER_ROUTE,
}


def filters_off() -> dict[str, Any]:
    """Per-route config of a route that refuses a request from its head alone: no filter that
    authenticates, calls a service or reads the body runs (the router answers at once)."""
    return {name: {"@type": t, "disabled": True} for name, t in _DISABLED.items()}
ACCEPTED_ENCODINGS = ("gzip", "identity")


def request_decompressor() -> dict[str, Any]:
    """Inflate gzip request bodies (responses are left as the provider sent them)."""
    return {
        "name": "envoy.filters.http.decompressor",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor",
            "decompressor_library": {
                "name": "gzip",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip",
                    "window_bits": 15,
                    # deflate's own maximum ratio: the size limit, not the ratio, refuses a bomb
                    # (Envoy's default of 100 silently cuts the body short instead: a 400 at best).
                    "max_inflate_ratio": 1032,
                },
            },
            "request_direction_config": {
                "common_config": {
                    "enabled": {"default_value": True, "runtime_key": "sidegate.decompress.request"},
                    # A no-transform client still sent gzip: leaving it compressed would only fail later.
                    "ignore_no_transform_header": True,
                },
                "advertise_accept_encoding": False,  # provider responses are not inflated here
            },
            "response_direction_config": {
                "common_config": {"enabled": {"default_value": False, "runtime_key": "sidegate.decompress.response"}},
            },
        },
    }


def inflated_limit_filter(cfg: SidegateConfig) -> dict[str, Any]:
    """Right after the decompressor: the request body is held (moved, not copied) until it is whole,
    and Envoy answers 413 (details ``request_payload_too_large``) as soon as it outgrows
    ``listener.max_request_bytes``, whatever the next filters do. Needed because the filter that
    reads the body next may hold data with a watermark rather than buffer it: the gateway ext_proc
    does so while it waits for its answer to the request headers, and ext_authz while its check
    runs. A held body is not bounded by the stream's limit (a watermark only pauses the client's
    reads), and one compressed read inflates up to 1032 times at once: a zip bomb passed whole to
    the gateway (over gRPC's message limit: a 503), or to Envoy's memory. Measured on Envoy 1.40."""
    return {
        "name": INFLATED_LIMIT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": cfg.listener.max_request_bytes,
        },
    }


def unsupported_encoding_route() -> dict[str, Any]:
    """415 for a request body in an encoding Envoy does not inflate. Routes are matched on the
    client's headers, before the decompressor removes an accepted ``content-encoding``."""
    accepted = {"safe_regex": {"regex": rf"(?i)\s*({'|'.join(ACCEPTED_ENCODINGS)})\s*"}}
    return {
        "name": "unsupported-encoding",
        "match": {
            "prefix": "/",
            "headers": [
                {"name": "content-encoding", "present_match": True},
                {"name": "content-encoding", "invert_match": True, "string_match": accepted},
            ],
        },
        "direct_response": {"status": 415},
        "typed_per_filter_config": filters_off(),
    }


LOCAL_REPLY_CASES = [
    (415, "invalid_request_error", "invalid_request_error",
     "Unsupported Content-Encoding: send the body as identity or gzip."),
    (431, "invalid_request_error", "invalid_request_error",
     "Request headers too large or too many."),
]  # fmt: skip
"""(status, Anthropic error type, OpenAI error type, message) of Envoy's own replies to input."""

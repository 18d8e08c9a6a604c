"""Envoy's own replies (413 too large, 503 no upstream, 504 timeout...) in the client's API format
(OpenAI's, Anthropic's or Google's): the connection manager's `local_reply_config`. Sidegate's own answers are in format already."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.bootstrap.buffers import TOO_LARGE_DETAILS, too_large_bodies
from sidegate.bootstrap.input import LOCAL_REPLY_CASES
from sidegate.core.intake import GOOGLE_METHODS
from sidegate.errors import Api, error_body
from sidegate.wire import AUTHZ_NS, FRONT_API_HEADER, REPLY_DETAILS

# The client's API: from the gateway's metadata when it ran (the upstream filter may already have
# rewritten :path to the provider's), else from the client's path.
_FRONT_MD = f"metadata.filter_metadata['{AUTHZ_NS}']"


def _client_is(api: str, by_path: str) -> str:
    """CEL: the client speaks `api` (the gateway's metadata, else the front's answer, else `by_path`)."""
    return (
        "(has(metadata.filter_metadata.sidegate) && has(metadata.filter_metadata.sidegate.api)"
        f" ? metadata.filter_metadata.sidegate.api == '{api}'"
        f" : (('{AUTHZ_NS}' in metadata.filter_metadata && '{FRONT_API_HEADER}' in {_FRONT_MD})"
        f" ? {_FRONT_MD}['{FRONT_API_HEADER}'] == '{api}' : {by_path}))"
    )


_ANTHROPIC_CLIENT = _client_is("anthropic", "request.path.startsWith('/v1/messages')")
# (endsWith, not `matches`: CEL's RE2 program-size limit refuses the alternation)
_GOOGLE_METHOD = " || ".join(f"request.url_path.endsWith(':{m}')" for m in sorted(GOOGLE_METHODS))
_GEMINI_CLIENT = _client_is(
    "gemini",
    "(request.path.startsWith('/v1beta/') || request.path.startsWith('/upload/v1beta/')"
    f" || (request.path.startsWith('/v1/models/') && ({_GOOGLE_METHOD})))",
)
"""A Gemini API client: its paths as sidegate/core/intake.py tells them (`is_gemini_path`)."""
_CLIENTS = {
    Api.ANTHROPIC: _ANTHROPIC_CLIENT,
    Api.GEMINI: _GEMINI_CLIENT,
    Api.OPENAI: f"!{_ANTHROPIC_CLIENT} && !{_GEMINI_CLIENT}",
}


# Envoy's reply when a Sidegate filter's service is unreachable (ext_proc's or ext_authz's error
# answer), or the gateway-unavailable route a fail-open request reaches: one message for all.
_GATEWAY_DOWN = ("(response.code_details.startsWith('ext_proc_error') || response.code_details.startsWith('ext_authz_error')"
                 " || response.code_details == 'direct_response')")  # fmt: skip


def _local_reply_mapper(status: int, api: Api | None, body: str, when: str = "") -> dict[str, Any]:
    """`api` None: whatever the client (a reply before the request line was read). `when`: a
    further CEL condition."""
    client = "true" if api is None else _CLIENTS[api]
    client += f" && {when}" if when else ""
    return {
        "filter": {
            "and_filter": {
                "filters": [
                    {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": f"sidegate.lr.{status}"}}}},
                    # Only Envoy's own replies: Sidegate's answers (details "sidegate") are already in format.
                    {"extension_filter": {
                        "name": "envoy.access_loggers.extension_filters.cel",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                            # ext_authz_denied: the front's (or authz service's) own answer, in format;
                            # lua_response: the try lane's answer (lua/envoy_try_lane.lua), in format.
                            "expression": f"response.code_details != '{REPLY_DETAILS}'"
                                          " && response.code_details != 'ext_authz_denied'"
                                          f" && response.code_details != 'lua_response' && {client}",
                        },
                    }},
                ]
            }
        },
        "body_format_override": {"text_format_source": {"inline_string": body}, "content_type": "application/json"},
    }


def local_reply_config() -> dict[str, Any]:
    """Envoy's own replies (413 too large, 503 no upstream, 504 timeout...) in the client's API format."""
    anth = '{"type":"error","error":{"type":"%s","message":"%s"}}'
    oai = '{"error":{"message":"%s","type":"%s","param":null,"code":null}}'
    cases = [
        # (the too-large routes' own answers carry their body: sidegate/bootstrap/routes.py)
        (413, "request_too_large", "invalid_request_error", "Request body too large for this gateway.",
         "response.code_details != 'direct_response'"),
        (503, "overloaded_error", "server_error", "The Sidegate gateway service is unavailable.", _GATEWAY_DOWN),
        (503, "overloaded_error", "server_error", "Upstream unavailable: %LOCAL_REPLY_BODY%"),
        (504, "timeout_error", "server_error", "Upstream request timed out."),
        (502, "api_error", "server_error", "Bad gateway: %LOCAL_REPLY_BODY%"),
        (500, "api_error", "server_error", "Gateway error: %LOCAL_REPLY_BODY%"),
        (404, "not_found_error", "invalid_request_error", "Unknown path."),
        *LOCAL_REPLY_CASES,
    ]
    # Envoy's 500 for an answer over listener.max_response_bytes: the provider's fault, a 502.
    too_large = f"response.code_details == '{TOO_LARGE_DETAILS}'"
    anth_large, oai_large = too_large_bodies()
    gem_large = error_body(Api.GEMINI, 502, orjson.loads(oai_large)["error"]["message"]).decode()
    mappers = [{**_local_reply_mapper(500, api, body, too_large), "status_code": 502}
               for api, body in ((Api.ANTHROPIC, anth_large), (Api.GEMINI, gem_large), (Api.OPENAI, oai_large))]  # fmt: skip
    for status, atype, otype, msg, *when in cases:
        mappers.append(_local_reply_mapper(status, Api.ANTHROPIC, anth % (atype, msg), *when))
        # Google's format also for the too-large route's own 413 (sidegate/bootstrap/routes.py: its
        # body is OpenAI's, one route for every path but Anthropic's): the 413 takes no `when` here.
        gwhen = () if status == 413 else when
        mappers.append(_local_reply_mapper(status, Api.GEMINI, error_body(Api.GEMINI, status, msg).decode(), *gwhen))
        mappers.append(_local_reply_mapper(status, Api.OPENAI, oai % (msg, otype), *when))
    # The client's API cannot be told when the codec refused the request before its path was
    # read (a CEL error fails the filters above): OpenAI's format, the more common client.
    mappers += [_local_reply_mapper(status, None, oai % (msg, otype), *when) for status, _, otype, msg, *when in cases]
    return {"mappers": mappers}

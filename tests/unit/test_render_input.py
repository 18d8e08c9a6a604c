"""Rendering of request decompression, the 415 route and the local replies for input errors."""

from __future__ import annotations

import re

from sidegate import config
from sidegate.bootstrap import render
from sidegate.bootstrap.input import ACCEPTED_ENCODINGS, INFLATED_LIMIT_FILTER, unsupported_encoding_route


def _hcm() -> dict:
    cfg = config.parse({
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:1", "api_key_env": "X"}},
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
    })  # fmt: skip
    return render.bootstrap(cfg)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_decompressor_first_for_requests_only() -> None:
    f = _hcm()["http_filters"][1]  # (after the config version header's filter: it reads no body)
    assert f["name"] == "envoy.filters.http.decompressor"
    cfg = f["typed_config"]
    assert cfg["request_direction_config"]["common_config"]["enabled"]["default_value"] is True
    assert cfg["response_direction_config"]["common_config"]["enabled"]["default_value"] is False
    assert cfg["decompressor_library"]["typed_config"]["max_inflate_ratio"] == 1032


def test_the_inflated_body_is_bounded_right_after_the_decompressor() -> None:
    """A buffer filter holds the inflated body under listener.max_request_bytes before any filter
    that may hold it with a watermark instead (ext_authz, the gateway ext_proc): Envoy's own 413."""
    f = _hcm()["http_filters"][2]
    assert f["name"] == INFLATED_LIMIT_FILTER
    assert f["typed_config"]["@type"].endswith("filters.http.buffer.v3.Buffer")
    assert f["typed_config"]["max_request_bytes"] == 32 * 1024 * 1024  # listener.max_request_bytes (default)


def test_unsupported_encoding_route_before_the_catch_alls() -> None:
    names = [r["name"] for r in _hcm()["route_config"]["virtual_hosts"][0]["routes"]]
    assert names.index("unsupported-encoding") < names.index("gateway-unavailable/v1/chat/completions")
    regex = unsupported_encoding_route()["match"]["headers"][1]["string_match"]["safe_regex"]["regex"]
    for value in (*ACCEPTED_ENCODINGS, "GZIP", " gzip "):
        assert re.fullmatch(regex, value), value
    for value in ("br", "deflate", "zstd", "gzip, br", "x-gzip"):
        assert not re.fullmatch(regex, value), value


def test_input_errors_have_local_replies_and_a_fallback_without_the_path() -> None:
    mappers = _hcm()["local_reply_config"]["mappers"]
    for status in (415, 431):
        mine = [m for m in mappers if m["filter"]["and_filter"]["filters"][0]["status_code_filter"]["comparison"]["value"]["default_value"] == status]
        assert len(mine) == 4  # Anthropic, Gemini, OpenAI, and the fallback when the path is unknown
        assert mine[-1]["body_format_override"]["text_format_source"]["inline_string"].startswith('{"error":')
        assert mappers.index(mine[-1]) > len(mappers) // 2  # fallbacks come after every specific mapper


def test_refusing_routes_switch_off_every_filter_that_reads_the_request() -> None:
    """The 413 and 415 routes answer from the head: nothing before the router may hold the request
    (the answers' buffer filter would read the whole body first), for either front."""
    for svc in ({}, {"front": "http", "auth": "inline"}):
        cfg = config.parse({
            "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:1", "api_key_env": "X"}},
            "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
            "services": svc,
        })  # fmt: skip
        hcm = render.bootstrap(cfg)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        chain = [f["name"] for f in hcm["http_filters"]]
        readers = chain[2 : chain.index("sidegate.answer_limit") + 1]  # after the version header and the decompressor (a no-op then)
        routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
        for name in ("too-large.anthropic", "too-large", "unsupported-encoding"):
            off = routes[name]["typed_per_filter_config"]
            assert all(off[f]["disabled"] for f in readers), (svc, name, readers, sorted(off))

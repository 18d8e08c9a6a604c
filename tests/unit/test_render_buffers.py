"""`listener.max_response_bytes`: validated, env-overridable, and rendered into every Envoy buffer
limit a whole buffered answer passes (docs/architecture.md, "Limits")."""

import pytest

from sidegate import config
from sidegate.bootstrap import render
from sidegate.bootstrap.buffers import TOO_LARGE_DETAILS

BASE = {
    "providers": {"oai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "K"}},
    "models": {"gpt-4o": {"routes": [{"provider": "oai"}]}},
}
MiB = 1024 * 1024


def _parts(cfg: config.SidegateConfig):
    b = render.bootstrap(cfg)
    listener = b["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    clusters = {c["name"]: c for c in b["static_resources"]["clusters"]}
    return listener, hcm, clusters


def test_default_is_32_mib_and_env_overrides_it():
    assert config.parse(dict(BASE), env={}).listener.max_response_bytes == 32 * MiB
    cfg = config.parse(dict(BASE), env={"SIDEGATE_MAX_RESPONSE_BYTES": str(8 * MiB), "SIDEGATE_MAX_REQUEST_BYTES": str(MiB)})
    assert cfg.listener.max_response_bytes == 8 * MiB and cfg.listener.max_request_bytes == MiB


def test_requests_are_32_mib_by_default_and_up_to_256_mib():
    assert config.parse(dict(BASE), env={}).listener.max_request_bytes == 32 * MiB
    big = {"max_request_bytes": 256 * MiB, "max_response_bytes": 256 * MiB}
    assert config.parse({**BASE, "listener": big}, env={}).listener.max_request_bytes == 256 * MiB
    for bad in (1023, 257 * MiB, "lots"):
        with pytest.raises(config.ConfigError, match="max_request_bytes"):
            config.parse({**BASE, "listener": {"max_request_bytes": bad, "max_response_bytes": 256 * MiB}}, env={})


def test_answers_limit_may_not_be_below_the_requests():
    """One buffer limit per Envoy stream for both directions: the answers' limit is the stream's."""
    with pytest.raises(config.ConfigError, match="at least max_request_bytes"):
        config.parse({**BASE, "listener": {"max_request_bytes": 64 * MiB}}, env={})
    with pytest.raises(config.ConfigError, match="at least max_request_bytes"):
        config.parse({**BASE, "listener": {"max_response_bytes": 8 * MiB}}, env={})


@pytest.mark.parametrize("bad", [1024, 257 * MiB, "lots"])
def test_out_of_range_is_rejected(bad):
    with pytest.raises(config.ConfigError, match="max_response_bytes"):
        config.parse({**BASE, "listener": {"max_request_bytes": 1024, "max_response_bytes": bad}}, env={})


def _answer_limit(hcm) -> int:
    names = [f["name"] for f in hcm["http_filters"]]
    # Right after the gateway (or front) filter: the request is whole when it raises the limit.
    i = names.index("sidegate.answer_limit")
    assert names[i - 1] in ("sidegate.gateway", "sidegate.front")
    return hcm["http_filters"][i]["typed_config"]["max_request_bytes"]


def test_limits_are_rendered():
    cfg = config.parse({**BASE, "listener": {"max_request_bytes": 4 * MiB, "max_response_bytes": 8 * MiB}}, env={})
    listener, hcm, clusters = _parts(cfg)
    assert _answer_limit(hcm) == 8 * MiB
    assert listener["per_connection_buffer_limit_bytes"] >= 8 * MiB
    assert hcm["route_config"]["virtual_hosts"][0]["request_body_buffer_limit"] == cfg.listener.max_request_bytes
    ext = clusters["sidegate_extproc"]
    window = ext["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "explicit_http_config"]["http2_protocol_options"]["initial_stream_window_size"]
    assert ext["per_connection_buffer_limit_bytes"] >= 4 * 8 * MiB and window >= 8 * MiB
    upstream = [f["name"] for f in hcm["http_filters"][-1]["typed_config"]["upstream_http_filters"]]
    assert upstream == ["sidegate.upstream", "sidegate.whole_answer", "envoy.filters.http.upstream_codec"]
    first = hcm["local_reply_config"]["mappers"][0]
    assert first["status_code"] == 502 and TOO_LARGE_DETAILS in str(first["filter"])


def test_too_large_routes_answer_in_each_apis_format():
    """A declared Content-Length over the limit: the route's own 413 body in the client's format
    (Envoy's local reply mappers leave it as it is)."""
    import json

    _, hcm, _ = _parts(config.parse(dict(BASE), env={}))
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    anthropic, openai = routes[:2]
    assert anthropic["match"]["prefix"] == "/v1/messages" and openai["match"]["prefix"] == "/"
    for route in (anthropic, openai):
        assert route["match"]["headers"][0]["range_match"]["start"] == 32 * MiB + 1
        assert route["response_headers_to_add"][0]["header"] == {"key": "content-type", "value": "application/json"}
    a = json.loads(anthropic["direct_response"]["body"]["inline_string"])
    o = json.loads(openai["direct_response"]["body"]["inline_string"])
    assert a["type"] == "error" and a["error"]["type"] == "request_too_large"
    assert o["error"]["type"] == "invalid_request_error" and "max_request_bytes" in o["error"]["message"]


def test_http_front_keeps_its_request_limit_and_raises_the_answers():
    cfg = config.parse({**BASE, "services": {"auth": "inline", "front": "http"}}, env={})
    _, hcm, _ = _parts(cfg)
    front = next(f for f in hcm["http_filters"] if f["typed_config"].get("http_service"))
    assert front["typed_config"]["with_request_body"]["max_request_bytes"] == cfg.listener.max_request_bytes
    assert _answer_limit(hcm) == 32 * MiB


def test_local_reply_mappers_leave_the_try_lanes_answers_alone():
    """The try lane's Lua answers (details `lua_response`) are in the client's format already: a
    503 "per-try stage unavailable" was wrapped again as "Upstream unavailable: {...}" (seen under
    16 concurrent 20 MiB requests)."""
    _, hcm, _ = _parts(config.parse({**BASE, "services": {"auth": "inline", "front": "http"}}, env={}))
    for mapper in hcm["local_reply_config"]["mappers"]:
        cel = mapper["filter"]["and_filter"]["filters"][1]["extension_filter"]["typed_config"]["expression"]
        assert "response.code_details != 'lua_response'" in cel

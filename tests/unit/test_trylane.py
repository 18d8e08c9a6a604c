"""Try lane (extproc/trylane.py) without Envoy: the two calls the Lua upstream filter makes, the
header-change encoding the Lua applies, the lane choice, the rendered clusters and routes, and
that a try whose response never comes is settled as aborted (replaced, abandoned or expired)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote

import orjson
import pytest
import yaml

from extproc.trylane import Tries, TryLane, encode_changes
from sidegate import config, wire
from sidegate.bootstrap import render
from sidegate.core.completion import Completion
from sidegate.core.context import RequestContext
from sidegate.core.tries import HeaderChanges, TryStage
from sidegate.errors import Api
from sidegate.features.guard.feature import GuardFeature
from sidegate.features.lane import LaneFeature
from sidegate.trust import Token
from sidegate.wire import TryWire

KEY = "sk-ant-provider-secret-123"


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def cfg(**services: object) -> config.SidegateConfig:
    return config.parse({
        "services": {"auth": "inline", "front": "http", **services},
        "providers": {
            "openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
            "anthropic": {"api": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
        },
        "models": {
            "gpt-4o-mini": {"routes": [{"provider": "openai"}]},
            "claude": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
        },
    }, env={"OPENAI_API_KEY": "sk-openai", "ANTHROPIC_API_KEY": KEY})  # fmt: skip


def decode_set(value: str) -> dict[str, str]:
    """What the Lua filter does with `x-sidegate-set` (gmatch + percent-decoding)."""
    out = {}
    for pair in value.split("&"):
        k, _, v = pair.partition("=")
        out[unquote(k)] = unquote(v)
    return out


def lane(done: list[Completion] | None = None) -> TryLane:
    c = cfg()  # the guard's per-try hook, as the app wires it: redaction and PII restore in each try
    return TryLane(TryStage(c, completion_hooks=[done.append] if done is not None else [], on_try=(GuardFeature(c).on_try,)), worker=1)


META = {"api": "openai", "model": "claude", "tenant": "acme", "front": "http", "lane": "try"}
CLIENT = orjson.dumps({"model": "claude", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
CALL = {"x-sidegate-meta": orjson.dumps(META).decode(), "x-sidegate-cluster": "provider.anthropic~try",
        "x-sidegate-attempt": "1", "x-request-id": "rid-7"}  # fmt: skip
PROVIDER_OK = orjson.dumps({
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 11, "output_tokens": 2},
})  # fmt: skip


def test_encode_changes_round_trips_through_the_lua_format():
    changes = HeaderChanges(set={":path": "/v1/messages?x=a&b=c", "authorization": "Bearer k=1&2%", "x-e": ""},
                            remove=["x-api-key", "authorization", "content-length"])  # fmt: skip
    out = encode_changes(changes)
    assert decode_set(out[TryWire.SET]) == changes.set
    assert out["x-sidegate-remove"] == "x-api-key,content-length"  # a set header is never also removed
    assert "\r" not in out[TryWire.SET] and "\n" not in out[TryWire.SET]
    assert encode_changes(HeaderChanges()) == {}


def test_request_translates_and_sets_this_providers_credential():
    tl = lane()
    ans = tl.handle("/try/request", dict(CALL), CLIENT)
    assert ans.status == 200
    body = orjson.loads(ans.body)
    assert body["model"] == "claude-3-5-haiku-20241022" and body["max_tokens"] == 9
    sets = decode_set(ans.headers[TryWire.SET])
    assert sets[":path"] == "/v1/messages" and sets["x-api-key"] == KEY and sets[":authority"] == "api.anthropic.com"
    assert sets["content-length"] == str(len(ans.body)) and sets["anthropic-version"]
    assert "authorization" in ans.headers["x-sidegate-remove"].split(",")
    assert ans.headers["x-sidegate-worker"] == "1" and ans.headers["x-sidegate-try"].startswith("1.")
    assert "rid-7" not in ans.headers["x-sidegate-try"]  # never the client's request id
    assert len(tl.tries) == 1


def test_response_translates_back_and_reports_usage():
    done: list[Completion] = []
    tl = lane(done)
    key = tl.handle("/try/request", dict(CALL), CLIENT).headers["x-sidegate-try"]
    provider = {"x-sidegate-try": key, TryWire.STATUS: "200", "x-sidegate-h-content-type": "application/json",
                "x-sidegate-h-x-ratelimit-limit-requests": "50"}  # fmt: skip
    ans = tl.handle("/try/response", provider, PROVIDER_OK)
    assert ans.status == 200 and ans.headers[TryWire.STATUS] == "200"
    out = orjson.loads(ans.body)
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["content"] == "hello"
    sets = decode_set(ans.headers[TryWire.SET])
    assert sets["x-sidegate-provider"] == "anthropic" and sets["x-sidegate-attempts"] == "1"
    removed = ans.headers["x-sidegate-remove"].split(",")
    assert "x-ratelimit-limit-requests" in removed and "content-length" not in removed  # Lua sets it
    assert len(done) == 1 and done[0].usage is not None and done[0].usage.input_tokens == 11 and not done[0].aborted
    assert len(tl.tries) == 0


def test_provider_error_keeps_a_retriable_status_and_scrubs_the_key():
    tl = lane()
    key = tl.handle("/try/request", dict(CALL), CLIENT).headers["x-sidegate-try"]
    err = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": f"bad key {KEY}"}})
    ans = tl.handle("/try/response", {"x-sidegate-try": key, TryWire.STATUS: "529"}, err)
    assert ans.headers[TryWire.STATUS] == "503"  # 529 -> 503 in the OpenAI client's terms
    assert KEY.encode() not in ans.body and orjson.loads(ans.body)["error"]["message"]


def test_refusal_in_the_request_phase_is_in_the_clients_format():
    tl = lane()
    ans = tl.handle("/try/request", {**CALL, "x-sidegate-cluster": "provider.nope~try"}, CLIENT)
    assert ans.status == 500 and ans.headers["x-sidegate-answer"] == "1"
    assert "error" in orjson.loads(ans.body)


def test_a_lost_try_answers_502_in_the_clients_format():
    ans = lane().handle("/try/response", {"x-sidegate-try": "gone", TryWire.STATUS: "200", "x-sidegate-api": "anthropic"}, b"{}")
    assert ans.status == 200 and ans.headers[TryWire.STATUS] == "502"
    assert orjson.loads(ans.body)["type"] == "error"


def test_tries_settle_once_whether_refused_replaced_abandoned_or_expired():
    done: list[Completion] = []
    tl = lane(done)
    # Refused before the provider (a translation error): settled at once, nothing kept.
    bad = orjson.dumps({"model": "claude", "messages": "not a list", "max_tokens": 9})
    refused = tl.handle("/try/request", dict(CALL), bad)
    assert refused.status == 400 and len(tl.tries) == 0
    assert len(done) == 1 and done[0].aborted and done[0].final
    # A try replaced by the request's next one (per-try timeout): not final, the next try settles.
    first = tl.handle("/try/request", dict(CALL), CLIENT).headers["x-sidegate-try"]
    second = tl.handle("/try/request", {**CALL, "x-sidegate-attempt": "2", "x-sidegate-previous": first}, CLIENT)
    assert len(done) == 2 and done[1].aborted and not done[1].final and len(tl.tries) == 1
    key = second.headers["x-sidegate-try"]
    tl.abandon(key)  # the access log says the request is over
    tl.abandon(key)  # twice is harmless
    assert len(done) == 3 and done[2].aborted and done[2].final and len(tl.tries) == 0
    # Expiry, by the sweep (also run periodically, not only on the next put).
    short = Tries(ttl_s=0.01)
    short.put("1.a", tl.stage.start_try(META, "provider.anthropic~try", 1))
    time.sleep(0.02)
    short.sweep()
    assert len(short) == 0 and len(done) == 4 and done[-1].aborted
    # Shutting down settles what is pending.
    tl.handle("/try/request", dict(CALL), CLIENT)
    tl.close()
    assert len(tl.tries) == 0 and len(done) == 5


def test_lane_stage_sends_non_streaming_per_try_requests_to_the_try_lane():
    stage = LaneFeature(cfg())
    ctx = RequestContext(path="/v1/chat/completions", method="POST", headers={}, api=Api.OPENAI, model="claude", route="claude")
    asyncio.run(stage.on_request(ctx))
    assert ctx.route == "claude~try" and ctx.meta["lane"] == "try"
    stream = RequestContext(path="/v1/chat/completions", method="POST", headers={}, api=Api.OPENAI, model="claude",
                            route="claude", stream=True)  # fmt: skip
    asyncio.run(stage.on_request(stream))
    assert stream.route == "claude" and "lane" not in stream.meta  # streams keep the gRPC per-try stage
    same = RequestContext(path="/v1/chat/completions", method="POST", headers={}, api=Api.OPENAI, model="gpt-4o-mini",
                          route="gpt-4o-mini")  # fmt: skip
    asyncio.run(stage.on_request(same))
    assert same.route == "gpt-4o-mini~direct"
    grpc_front = LaneFeature(cfg(front="ext_proc", auth="ext_authz"))
    ctx = RequestContext(path="/v1/chat/completions", method="POST", headers={}, api=Api.OPENAI, model="claude", route="claude")
    asyncio.run(grpc_front.on_request(ctx))
    assert ctx.route == "claude"


def test_render_try_clusters_and_routes():
    boot = render.bootstrap(cfg())
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    tc = clusters["provider.anthropic~try"]
    filters = tc["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
    lua = filters[1]["typed_config"]["default_source_code"]["inline_string"]
    assert [f["name"] for f in filters] == [
        "sidegate.hygiene.request", "sidegate.try", "sidegate.hygiene.response", "envoy.filters.http.upstream_codec"]
    assert 'local CLUSTER = "provider.anthropic~try"' in lua and "/try/request" in lua and "${" not in lua
    assert tc["transport_socket"]["typed_config"]["sni"] == "api.anthropic.com"  # the provider's TLS as usual
    assert wire.provider_of_cluster("provider.anthropic~try") == "anthropic"
    routes = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    names = [r["name"] for r in routes]
    assert "model.claude.0~try" in names and "model.gpt-4o-mini.0~try" in names
    off = yaml.safe_dump(render.bootstrap(cfg(front="ext_proc", auth="ext_authz")))
    assert "~try" not in off


def test_front_prepares_the_first_try_without_the_key():
    tl = lane()
    meta = {**META, "start": 0}
    out = tl.prepare(meta, CLIENT)
    assert out["x-sidegate-prepared"] == "provider.anthropic~try" and out["x-sidegate-try"].startswith("1.")
    body = orjson.loads(out["x-sidegate-body"])
    assert body["model"] == "claude-3-5-haiku-20241022" and out["x-sidegate-body"].isascii()
    sets = decode_set(out[TryWire.SET])
    assert sets[":path"] == "/v1/messages" and sets["content-length"] == str(len(out["x-sidegate-body"]))
    assert "x-api-key" not in sets and KEY not in repr(out)  # the Lua reads the key from Envoy's environment
    assert len(tl.tries) == 1
    # The response comes back to the try the front registered.
    ans = tl.handle("/try/response", {"x-sidegate-try": out["x-sidegate-try"], TryWire.STATUS: "200"}, PROVIDER_OK)
    assert ans.headers[TryWire.STATUS] == "200" and orjson.loads(ans.body)["object"] == "chat.completion"


def test_front_prepares_non_ascii_bodies_as_escaped_json_and_skips_large_ones():
    tl = lane()
    text = "Grüße aus Köln, 東京"
    client = orjson.dumps({"model": "claude", "messages": [{"role": "user", "content": text}], "max_tokens": 9})
    out = tl.prepare(dict(META), client)
    assert out["x-sidegate-body"].isascii() and orjson.loads(out["x-sidegate-body"])["messages"][0]["content"] == text
    big = orjson.dumps({"model": "claude", "messages": [{"role": "user", "content": "x" * 40000}], "max_tokens": 9})
    assert tl.prepare(dict(META), big) == {}  # the Lua makes the /try/request call instead
    assert len(tl.tries) == 1


def test_front_does_not_prepare_what_it_cannot_know():
    c = config.parse({
        "services": {"auth": "inline", "front": "http"},
        "providers": {
            "a": {"api": "anthropic", "base_url": "https://a.example", "api_key_env": "ANTHROPIC_API_KEY"},
            "b": {"api": "anthropic", "base_url": "https://b.example", "api_key_env": "ANTHROPIC_API_KEY"},
            "pool": {"api": "anthropic", "base_url": "https://p.example", "api_key_envs": [{"env": "K1"}, {"env": "K2"}]},
        },
        "models": {
            "weighted": {"routes": [{"provider": "a", "weight": 1, "priority": 0}, {"provider": "b", "weight": 1, "priority": 0}]},
            "pooled": {"routes": [{"provider": "pool"}]},
        },
    }, env={})  # fmt: skip
    tl = TryLane(TryStage(c), worker=0)
    for model in ("weighted", "pooled"):  # Envoy picks the provider by weight / Python picks the key
        assert tl.prepare({**META, "model": model}, CLIENT) == {}
    assert len(tl.tries) == 0


TOKEN = "trylane-test-token-0123456789"


def test_abandon_reaches_the_worker_that_holds_the_try():
    """The access-log entry may arrive at another worker: it passes the abandon on over HTTP."""
    from extproc.front import Front, FrontServer
    from sidegate.core.pipeline import Gateway
    from sidegate.ports import free_port_block

    async def go() -> list[Completion]:
        done: list[Completion] = []
        up = TryStage(cfg(), completion_hooks=[done.append])
        base = free_port_block(2)
        holder = TryLane(up, worker=1, front_port=base + 1, token=TOKEN)
        server = FrontServer(Front(Gateway([]), 1, holder), Token(TOKEN))
        await server.start("127.0.0.1", base + 1)
        key = holder.new_key()
        holder.tries.put(key, up.start_try(META, "provider.anthropic~try", 1))
        other = TryLane(up, worker=0, front_port=base, token=TOKEN)
        other.abandon(key)  # the key names worker 1
        for _ in range(100):
            if done:
                break
            await asyncio.sleep(0.02)
        await server.close()
        return done

    done = asyncio.run(go())
    assert len(done) == 1 and done[0].aborted


def test_a_retry_that_cannot_start_leaves_the_previous_try_final():
    done: list[Completion] = []
    tl = lane(done)
    first = tl.handle("/try/request", dict(CALL), CLIENT).headers["x-sidegate-try"]
    bad = tl.handle("/try/request", {**CALL, "x-sidegate-cluster": "provider.nope~try", "x-sidegate-previous": first}, CLIENT)
    assert bad.status == 500 and orjson.loads(bad.body)["error"]
    assert len(done) == 1 and done[0].aborted and done[0].final  # the request's last try settles
    assert len(tl.tries) == 0


def test_tries_live_as_long_as_a_try_can():
    c = config.parse({
        "services": {"auth": "inline", "front": "http"},
        "providers": {"openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"}},
        "models": {"slow": {"routes": [{"provider": "openai"}], "timeout_s": 0, "per_try_timeout_s": 240}},
    }, env={})  # fmt: skip
    assert TryLane(TryStage(c)).tries.ttl_s == 270  # a route timeout of 0 (none) does not shorten it


def test_prepare_takes_the_guards_redacted_body_and_restore_map():
    """The front already redacted the body (guard stage): the prepared try uses it as it is and
    restores the original values in the response."""
    tl = lane()
    email = "jane.doe@example.com"
    client = orjson.dumps({"model": "claude", "messages": [{"role": "user", "content": f"Mail {email}"}], "max_tokens": 9})
    # A placeholder the per-try redaction would not produce: proves the guard's body is the one used.
    redacted = client.replace(email.encode(), b"<EMAIL_7>")
    out = tl.prepare({**META, "redact": True}, client, redacted, {"<EMAIL_7>": email})
    assert email not in out[TryWire.BODY] and "<EMAIL_7>" in out[TryWire.BODY]
    answer = orjson.loads(PROVIDER_OK)
    answer["content"][0]["text"] = "Sent to <EMAIL_7>"
    ans = tl.handle("/try/response", {TryWire.KEY: out[TryWire.KEY], TryWire.STATUS: "200"}, orjson.dumps(answer))
    assert orjson.loads(ans.body)["choices"][0]["message"]["content"] == f"Sent to {email}"

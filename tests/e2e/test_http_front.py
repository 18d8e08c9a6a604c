"""The HTTP front (`services.front: http`, docs/performance.md): the gateway stages answer Envoy's
ext_authz HTTP check instead of a gRPC ext_proc stream. Proven through a real Envoy with the
official SDKs: the three lanes (direct; the try lane: the per-try stage over HTTP from a Lua upstream
filter, for non-streaming requests; gRPC per try for streams that need it), refusals in each API's
format, rate-limit headers, cache hits replayed from the front, PII redaction done per try,
fallback across schemas, aborted tries settled, quota and ledger, and that no gateway ext_proc
stream is ever opened."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "Say hi"}]
EMAIL = "jane.doe@example.com"
STACK_EXTRA = {
    "services": {"auth": "inline", "front": "http", "extproc_workers": 2},
    "models": {
        "claude-direct": {"routes": [{"provider": "anthropic"}]},
        "cached": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}], "cache": {"exact": True}},
        "chain": {"routes": [{"provider": "openai", "model": "gpt-4o-mini", "priority": 0},
                             {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "priority": 1}]},
        "chain-timeout": {"per_try_timeout_s": 1.0,
                          "routes": [{"provider": "openai", "model": "slow-model", "priority": 0},
                                     {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "priority": 1}]},
    },
    "tenants": {"globex": {"quota": {"limits": {"tpm": 100000, "rpm": 3}}}},
}
GATEWAY_STREAMS = "http.sidegateext_proc.gateway.streams_started"
FRONT_OK = "http.sidegate.ext_authz.ok"
UPSTREAM_STREAMS = "http.sidegateext_proc.upstream.streams_started"
TRY_OPENAI = "cluster.provider.openai~try.upstream_rq_total"
TRY_ANTHROPIC = "cluster.provider.anthropic~try.upstream_rq_total"
FRONT_CALLS = "cluster.sidegate_front.upstream_rq_total"
"""Checks, and the try lane's /try/request calls (a try the front prepared makes none)."""
LOGGED = "access_logs.grpc_access_log.logs_written"


def oai(stack, who: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys[who].key, max_retries=0)


def ant(stack, who: str = "acme") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys[who].key, max_retries=0)


def _stat(stack, name: str) -> int:
    return stack.stat(name) or 0


def test_direct_lane_through_the_front(stack, fake_openai):
    before, answered = _stat(stack, UPSTREAM_STREAMS), _stat(stack, FRONT_OK)
    fake_openai.script([{"usage": {"prompt_tokens": 31, "completion_tokens": 4}}])
    raw = oai(stack).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    assert raw.parse().usage.total_tokens == 35
    assert raw.headers["x-sidegate-provider"] == "openai" and raw.headers["x-sidegate-attempts"] == "1"
    assert not any(h.startswith("x-ratelimit-") for h in raw.headers)  # acme is unlimited; the provider's are hidden
    assert _stat(stack, UPSTREAM_STREAMS) == before
    assert _stat(stack, FRONT_OK) == answered + 1  # the front answered the check...
    assert stack.stat(GATEWAY_STREAMS) is None, "...and no gateway ext_proc filter exists"
    (rec,) = fake_openai.requests
    assert rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    assert stack.keys["acme"].key not in repr(rec.headers)
    assert not any(h.startswith("x-sidegate") or h.startswith("x-envoy-auth") for h in rec.headers)
    led = stack.wait_ledger(lambda r: (r.input_tokens, r.output_tokens) == (31, 4))
    assert led.tenant == "acme" and led.provider == "openai" and led.status == 200


def test_full_lane_stream_and_translation(stack, fake_anthropic):
    before = _stat(stack, UPSTREAM_STREAMS)
    fake_anthropic.script([{"usage": {"input_tokens": 12, "output_tokens": 6}, "chunks": 3}])
    chunks = list(oai(stack).chat.completions.create(model="claude-haiku", messages=MSG, stream=True,
                                                     stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert _stat(stack, UPSTREAM_STREAMS) == before + 1
    (rec,) = fake_anthropic.requests
    assert rec.path == "/v1/messages" and rec.json["model"] == "claude-3-5-haiku-20241022"
    assert rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    stack.wait_ledger(lambda r: r.stream and (r.input_tokens, r.output_tokens) == (12, 6))


def test_anthropic_client_direct(stack, fake_anthropic):
    msg = ant(stack).messages.create(model="claude-direct", max_tokens=50, messages=MSG)
    assert msg.content[0].text
    (rec,) = fake_anthropic.requests
    assert rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY and "authorization" not in rec.headers


def test_refusals_keep_each_api_format(stack):
    bad = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="sk-sg-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError) as a:
        anthropic.Anthropic(base_url=stack.base_url, api_key="nope", max_retries=0).messages.create(
            model="claude-direct", max_tokens=5, messages=MSG)  # fmt: skip
    assert a.value.status_code == 401
    assert a.value.response.json()["type"] == "error" and a.value.response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.BadRequestError) as b:
        oai(stack).chat.completions.create(model="no-such-model", messages=MSG)
    assert b.value.status_code == 400 and b.value.body["code"] == "model_not_found" and "no-such-model" in b.value.message
    r = httpx.post(stack.base_url + "/v1/audio/speech", json={}, headers={"authorization": f"Bearer {stack.keys['acme'].key}"})
    assert r.status_code == 404 and r.json()["error"]["message"].startswith("Unknown path")


def test_rate_limited_with_retry_after(stack, fake_openai):
    client = oai(stack, "globex")
    codes = []
    for i in range(5):
        try:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
            codes.append(200)
            # the front's headers (ext_authz adds them), once each: the provider's are removed
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            assert raw.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        except openai.RateLimitError as e:
            codes.append(429)
            assert float(e.response.headers["retry-after"]) > 0
            assert e.response.headers["x-ratelimit-remaining-requests"] == "0"
            assert e.body["code"] == "rate_limit_exceeded"
    assert codes == [200, 200, 200, 429, 429]
    assert len(fake_openai.requests) == 3


def test_cache_hit_replayed_by_the_front(stack, fake_openai):
    body = {"model": "cached", "messages": [{"role": "user", "content": "Capital of France?"}]}
    first = oai(stack).chat.completions.with_raw_response.create(**body)
    assert "x-sidegate-cache" not in first.headers  # a miss carries no cache header
    deadline = time.monotonic() + 5
    hit = None
    while time.monotonic() < deadline:  # the fill lands just after the response
        hit = oai(stack).chat.completions.with_raw_response.create(**body)
        if hit.headers.get("x-sidegate-cache") == "hit-exact":
            break
        time.sleep(0.1)
    assert hit is not None and hit.headers.get("x-sidegate-cache") == "hit-exact"
    assert hit.parse().choices[0].message.content == first.parse().choices[0].message.content
    n = len(fake_openai.requests)  # hits never reach the provider
    oai(stack).chat.completions.create(**body)
    assert len(fake_openai.requests) == n


def test_pii_redacted_per_try_and_restored(stack, fake_openai):
    before, tries = _stat(stack, UPSTREAM_STREAMS), _stat(stack, TRY_OPENAI)
    r = oai(stack).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"Mail {EMAIL} now"}])
    (rec,) = fake_openai.requests  # the fake echoes the prompt
    assert EMAIL not in rec.body.decode() and "<EMAIL_1>" in rec.body.decode()
    assert _stat(stack, TRY_OPENAI) == tries + 1  # redaction forces the per-try stage: the try lane
    assert _stat(stack, UPSTREAM_STREAMS) == before
    assert EMAIL in (r.choices[0].message.content or "")


def test_try_lane_translates_both_ways(stack, fake_openai, fake_anthropic):
    """Non-streaming requests that need the per-try stage take the try lane: no gRPC stream."""
    before, tries, calls = _stat(stack, UPSTREAM_STREAMS), _stat(stack, TRY_ANTHROPIC), _stat(stack, FRONT_CALLS)
    fake_anthropic.script([{"usage": {"input_tokens": 21, "output_tokens": 5},
                            "headers": {"x-ratelimit-limit-requests": "77"}}])  # fmt: skip
    raw = oai(stack).chat.completions.with_raw_response.create(model="claude-haiku", messages=MSG, max_tokens=20)
    done = raw.parse()
    assert done.object == "chat.completion" and done.choices[0].message.content.startswith("Echo")
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (21, 5)
    assert raw.headers["x-sidegate-provider"] == "anthropic" and raw.headers["x-sidegate-attempts"] == "1"
    assert "x-ratelimit-limit-requests" not in raw.headers  # the provider's limits are not the client's
    assert int(raw.headers["content-length"]) == len(raw.content)
    (rec,) = fake_anthropic.requests
    assert rec.path == "/v1/messages" and rec.json["model"] == "claude-3-5-haiku-20241022" and rec.json["max_tokens"] == 20
    assert rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY and "authorization" not in rec.headers
    assert not any(h.startswith("x-sidegate") or h.startswith("x-envoy-auth") for h in rec.headers)
    assert _stat(stack, TRY_ANTHROPIC) == tries + 1 and _stat(stack, UPSTREAM_STREAMS) == before
    assert _stat(stack, FRONT_CALLS) == calls + 1  # the check only: the front prepared the try
    stack.wait_ledger(lambda r: (r.input_tokens, r.output_tokens) == (21, 5) and r.provider == "anthropic")

    fake_openai.script([{"usage": {"prompt_tokens": 8, "completion_tokens": 3}}])
    gpt = ant(stack).messages.create(model="gpt-4o", max_tokens=30, messages=MSG)  # Anthropic client, OpenAI provider
    assert gpt.type == "message" and gpt.content[0].text.startswith("Echo")
    assert (gpt.usage.input_tokens, gpt.usage.output_tokens) == (8, 3)
    (orec,) = fake_openai.requests
    assert orec.path == "/v1/chat/completions" and orec.json["model"] == "gpt-4o-2024-08-06"
    assert orec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}" and "x-api-key" not in orec.headers


def test_try_lane_large_and_non_ascii_bodies(stack, fake_anthropic):
    """A body too large for the front to prepare takes the /try/request call; non-ASCII text
    survives both ways (the prepared body travels as escaped JSON)."""
    text = "Grüße aus Köln, 東京 ✓ "
    for content, prepared in ((text, True), (text + "x" * 40_000, False)):
        calls = _stat(stack, FRONT_CALLS)
        r = oai(stack).chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": content}])
        assert r.choices[0].message.content == f"Echo: {content}"
        rec = fake_anthropic.requests[-1]
        assert rec.json["messages"][0]["content"] == content and rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
        assert _stat(stack, FRONT_CALLS) == calls + (1 if prepared else 2)


def test_try_lane_provider_error_in_the_clients_format(stack, fake_anthropic):
    fake_anthropic.script([{"status": 400, "error": {"type": "invalid_request_error", "message": "max_tokens: too big"}}])
    with pytest.raises(openai.BadRequestError) as e:
        oai(stack).chat.completions.create(model="claude-haiku", messages=MSG)
    assert e.value.status_code == 400 and "too big" in e.value.message
    assert e.value.response.json()["error"]["type"] == "invalid_request_error"


def test_try_lane_provider_answers_without_a_body(stack, fake_anthropic):
    """A status with no body at all still reaches the client, translated, with a body."""
    for status, exc in ((400, openai.BadRequestError), (200, openai.APIStatusError)):
        fake_anthropic.script([{"status": status, "empty": True}])
        client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0, timeout=5)
        with pytest.raises(exc) as e:
            client.chat.completions.create(model="claude-haiku", messages=MSG)
        assert e.value.status_code == (400 if status == 400 else 502)  # an empty 200 is not a valid answer
        assert e.value.response.json()["error"]["message"]


def test_try_lane_falls_back_across_schemas(stack, fake_openai, fake_anthropic):
    """A retriable error on the first provider: Envoy retries the next one, translated for it."""
    fake_openai.script([{"status": 429, "error": "slow down", "retry_after": 1}])
    calls = _stat(stack, FRONT_CALLS)
    raw = ant(stack).messages.with_raw_response.create(model="chain", max_tokens=30, system="Be brief.", messages=MSG)
    assert _stat(stack, FRONT_CALLS) == calls + 2  # the check (try 1 prepared) and try 2's /try/request
    msg = raw.parse()
    assert msg.type == "message" and msg.content[0].text.startswith("Echo")
    assert raw.headers["x-sidegate-provider"] == "anthropic" and raw.headers["x-sidegate-attempts"] == "2"
    (first,) = fake_openai.requests
    (second,) = fake_anthropic.requests
    assert first.json["model"] == "gpt-4o-mini" and first.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    assert second.json["model"] == "claude-3-5-haiku-20241022" and second.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    assert "authorization" not in second.headers  # the first try's credential did not leak into the second
    # Each try translated from the client's body (not from the previous try's).
    assert first.json["messages"][0] == {"role": "system", "content": "Be brief."} and "max_completion_tokens" in first.json
    assert second.json["system"] == "Be brief." and second.json["max_tokens"] == 30


def test_try_lane_per_try_timeout_falls_back_and_settles_once(stack, fake_openai, fake_anthropic):
    """The first try times out (no response ever comes to it): Envoy retries the next provider;
    the timed-out try is not final, the answering one settles with the provider's usage."""
    fake_openai.script([{"model": "slow-model", "delay_s": 3.0}])
    fake_anthropic.script([{"usage": {"input_tokens": 33, "output_tokens": 4}}])
    raw = oai(stack).chat.completions.with_raw_response.create(model="chain-timeout", messages=MSG)
    assert raw.headers["x-sidegate-provider"] == "anthropic" and raw.headers["x-sidegate-attempts"] == "2"
    rec = stack.wait_ledger(lambda r: r.model == "chain-timeout" and r.status == 200)
    assert (rec.input_tokens, rec.output_tokens) == (33, 4) and rec.provider == "anthropic" and not rec.aborted
    time.sleep(1.0)  # an aborted record for the first try would come from the access log by now
    assert [r for r in stack.ledger() if r.model == "chain-timeout" and r.aborted] == []


def test_access_log_carries_only_what_the_observers_need(stack, fake_openai, fake_anthropic):
    """A try-lane request that got its response was observed by the front: Envoy does not log it
    to the gateway; a direct-lane request is observed from that log (native metadata filters)."""
    before = _stat(stack, LOGGED)
    fake_anthropic.script([{"usage": {"input_tokens": 5, "output_tokens": 2}}])
    oai(stack).chat.completions.create(model="claude-haiku", messages=MSG)
    stack.wait_ledger(lambda r: (r.input_tokens, r.output_tokens) == (5, 2) and r.provider == "anthropic")
    time.sleep(0.3)  # the log is flushed every 50 ms
    assert _stat(stack, LOGGED) == before
    fake_openai.script([{"usage": {"prompt_tokens": 6, "completion_tokens": 2}}])
    oai(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    stack.wait_ledger(lambda r: (r.input_tokens, r.output_tokens) == (6, 2) and r.provider == "openai")
    assert _stat(stack, LOGGED) == before + 1


@pytest.mark.alone  # bounds a duration
def test_try_lane_settles_an_aborted_request(stack, fake_anthropic):
    """The client leaves before the provider answers: the try is settled as aborted (from the access log)."""
    fake_anthropic.script([{"delay_s": 3.0}])
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": "abort me please"}])
    left = time.monotonic()
    rec = stack.wait_ledger(lambda r: r.aborted and r.provider == "anthropic", timeout_s=8.0)
    assert rec.tenant == "acme" and time.monotonic() - left < 2.5  # from the access log, not the provider's late answer


def _log_lines(stack) -> list[dict]:
    return [json.loads(line) for line in stack.logs().splitlines() if line.startswith("{") and '"route"' in line]


def test_access_log_has_the_gateway_fields_and_no_secrets(stack):
    deadline = time.monotonic() + 15  # Envoy flushes its access log file every few seconds
    while not any(x["route"].startswith("replay.") for x in _log_lines(stack)) and time.monotonic() < deadline:
        time.sleep(0.2)
    logs = stack.logs()
    lines = _log_lines(stack)
    ours = [x for x in lines if x.get("tenant") == "acme" and x.get("model") == "gpt-4o-mini"]
    assert ours and all(x["key_id"] == stack.keys["acme"].id for x in ours)
    assert any(x.get("cache") == "hit_exact" and x["route"].startswith("replay.") for x in lines)  # a replayed hit is logged with its result
    for secret in [k.key for k in stack.keys.values()] + [OPENAI_PROVIDER_KEY, ANTHROPIC_PROVIDER_KEY, EMAIL]:
        assert secret not in logs


def _per_worker(stack) -> dict[str, int]:
    """Envoy's requests per Sidegate front endpoint: `checks@<port>` (the `sidegate_front` cluster,
    per worker) and `held@<port>` (a worker's own cluster: replays and try responses)."""
    text = httpx.get(f"{stack.admin_url}/clusters", timeout=5).text
    out: dict[str, int] = {}
    for line in text.splitlines():
        cluster, host, stat, value = [*line.split("::"), "", "", ""][:4]
        if stat == "rq_total" and cluster.startswith("sidegate_front"):
            kind = "checks" if cluster == "sidegate_front" else "held"
            out[f"{kind}@{host.rsplit(':', 1)[1]}"] = int(value)
    return out


def test_two_workers_share_the_checks_and_each_try_returns_to_its_worker(stack, fake_anthropic):
    """With two workers, Envoy sends each check to the worker with the fewest in flight (both get
    some), and every prepared try's provider response goes back to the worker that prepared it:
    per worker, the responses it got equal the checks it answered."""
    from concurrent.futures import ThreadPoolExecutor

    (cluster,) = [c["cluster"] for c in stack.envoy_config("dynamic_active_clusters") if c["cluster"]["name"] == "sidegate_front"]
    assert cluster["lb_policy"] == "LEAST_REQUEST" and cluster["least_request_lb_config"] == {"choice_count": 2}
    before = _per_worker(stack)
    client = oai(stack)

    def one(i: int) -> str:
        done = client.chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=9)
        return done.choices[0].message.content

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(24)))
    assert len(answers) == 24 and all(a.startswith("Echo") for a in answers)
    after = _per_worker(stack)
    delta = {k: after[k] - before.get(k, 0) for k in after}
    ports = sorted(k.split("@")[1] for k in delta if k.startswith("checks@"))
    assert len(ports) == 2 and sum(delta[f"checks@{p}"] for p in ports) == 24
    for p in ports:
        assert delta[f"checks@{p}"] > 0, delta  # both workers answered checks
        assert delta[f"held@{p}"] == delta[f"checks@{p}"], delta  # each try came back to its worker

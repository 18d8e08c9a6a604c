"""Client input handled right, through a real Envoy on both fronts (ext_proc + ext_authz, and the
HTTP front with inline auth): failed-auth throttling that never locks a valid key out, duplicate
JSON keys refused on every lane, gzip request bodies inflated within the size limit (other
encodings 415), and Envoy's own 431 in the API's error format."""

from __future__ import annotations

import functools
import gzip
import secrets
import time
import zlib
from collections.abc import Iterator

import httpx
import orjson
import pytest
from fault_helpers import CHAT, MESSAGES, error_message
from harness import FRONT_SERVICES, Stack, front_stack

from sidegate import keys

pytestmark = pytest.mark.e2e
MAX_FAILURES = 5
MAX_SOURCE_FAILURES = 15
THROTTLE = {"auth_max_failures": MAX_FAILURES, "auth_max_source_failures": MAX_SOURCE_FAILURES, "auth_block_s": 30}
_sources = iter(range(30, 250))


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from front_stack(request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url,
                           {"services": THROTTLE})  # fmt: skip


def _client() -> httpx.Client:
    """A client on its own loopback address: throttle state of one test never leaks into another."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=f"127.0.0.{next(_sources)}"), timeout=10)


def _body(api: str, model: str, **extra: object) -> dict:
    body: dict = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    if api == "anthropic":
        body.setdefault("max_tokens", 16)
    return body


def _post(c: httpx.Client, gw: Stack, api: str, key: str, content: bytes | None = None, model: str = "",
          headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    model = model or ("gpt-4o-mini" if api == "openai" else "claude-haiku")
    auth = {"authorization": f"Bearer {key}"} if api == "openai" else {"x-api-key": key}
    h = {"content-type": "application/json", **auth, **(headers or {})}
    return c.post(gw.base_url + (CHAT if api == "openai" else MESSAGES),
                  content=content if content is not None else orjson.dumps(_body(api, model)), headers=h)  # fmt: skip


def _wrong_secret(kid: str) -> str:
    return f"sgk_{kid}_{secrets.token_hex(20)}"


# -- failed-auth throttling ------------------------------------------------------------------------
def test_failures_of_other_keys_never_lock_out_a_valid_key_from_the_same_address(gw: Stack) -> None:
    with _client() as c:
        codes = []
        for i in range(30):  # unknown ids and malformed keys: twice the address's bound
            key = [keys.new_key()[0], "sgk_nope", "not-a-key"][i % 3]
            codes.append(_post(c, gw, "openai", key).status_code)
        assert set(codes) == {401, 429}, codes
        for _ in range(3):  # valid keys of both tenants, both APIs, still served from this address
            assert _post(c, gw, "openai", gw.keys["acme"].key).status_code == 200
            assert _post(c, gw, "anthropic", gw.keys["globex"].key).status_code == 200


def test_guessing_one_key_id_is_throttled_for_that_id_only(gw: Stack, fake_openai) -> None:
    target = gw.keys["globex"]
    with _client() as attacker:
        codes = [_post(attacker, gw, "openai", _wrong_secret(target.id)).status_code for _ in range(MAX_FAILURES + 3)]
        assert codes == [401] * MAX_FAILURES + [429] * 3, codes
        r = _post(attacker, gw, "anthropic", _wrong_secret(target.id))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and error_message("anthropic", r)
        # Blocked before the secret is checked: even the right one gets no answer from here.
        r = _post(attacker, gw, "openai", target.key)
        assert r.status_code == 429 and "authentication" in error_message("openai", r)
        assert _post(attacker, gw, "openai", gw.keys["acme"].key).status_code == 200  # other ids: served
    with _client() as other:  # the same key from another address is untouched
        assert _post(other, gw, "openai", target.key).status_code == 200
    assert fake_openai.requests  # and the served requests did reach the provider


def test_a_spray_from_one_address_is_throttled_at_its_higher_bound(gw: Stack) -> None:
    with _client() as c:
        codes = [_post(c, gw, "anthropic", keys.new_key()[0]).status_code for _ in range(MAX_SOURCE_FAILURES + 3)]
        assert codes == [401] * (MAX_SOURCE_FAILURES - 1) + [429] * 4, codes
        r = _post(c, gw, "openai", "sgk_guess")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and error_message("openai", r)
    with _client() as other:
        assert _post(other, gw, "openai", keys.new_key()[0]).status_code == 401


# -- duplicate keys --------------------------------------------------------------------------------
DUPLICATES = {
    # direct lane (non-streaming, same API, same model name), full lane, translated both ways
    "direct-openai": ("openai", b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"}', "model"),
    "stream-openai": ("openai", b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}],"mod\\u0065l":"gpt-4o"}', "model"),
    "translated-openai": ("openai", b'{"model":"claude-haiku","messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"}', "model"),
    "anthropic": ("anthropic", b'{"model":"claude-haiku","max_tokens":16,"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o"}', "model"),
    "nested-content": ("anthropic", b'{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"my SSN is 078-05-1120","content":"hi"}]}', "content"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_duplicate_keys_are_refused_on_every_lane(gw: Stack, fake_openai, fake_anthropic, case: str) -> None:
    api, raw, key = DUPLICATES[case]
    with _client() as c:
        r = _post(c, gw, api, gw.keys["acme"].key, content=raw)
        assert r.status_code == 400, r.text
        msg = error_message(api, r)
        assert f"'{key}'" in msg and "078-05" not in msg and "gpt-4o" not in msg
        assert not fake_openai.requests and not fake_anthropic.requests  # the provider never saw it
        # The same body with the duplicate member removed is served (the refusal is the duplicate).
        fixed = orjson.loads(raw)
        assert _post(c, gw, api, gw.keys["acme"].key, content=orjson.dumps(fixed)).status_code == 200


# -- compressed bodies -----------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_gzip_body_is_inflated_before_the_gateway_and_the_provider(gw: Stack, fake_openai, fake_anthropic, api: str) -> None:
    model = "gpt-4o-mini" if api == "openai" else "claude-haiku"
    with _client() as c:
        r = _post(c, gw, api, gw.keys["acme"].key, content=gzip.compress(orjson.dumps(_body(api, model))),
                  headers={"content-encoding": "gzip"})  # fmt: skip
        assert r.status_code == 200, r.text
        rec = (fake_openai if api == "openai" else fake_anthropic).requests[-1]
        assert "content-encoding" not in rec.headers and rec.json["messages"][0]["content"] == "hi"
        dup = b'{"model":"%s","max_tokens":16,"messages":[{"role":"user","content":"hi"}],"model":"x"}' % model.encode()
        r = _post(c, gw, api, gw.keys["acme"].key, content=gzip.compress(dup), headers={"content-encoding": "gzip"})
        assert r.status_code == 400 and "'model'" in error_message(api, r)
        # Compresses 500:1 yet is within the size limit once inflated: served whole.
        long = _body(api, model) | {"messages": [{"role": "user", "content": "a" * 600_000}]}
        r = _post(c, gw, api, gw.keys["acme"].key, content=gzip.compress(orjson.dumps(long)), headers={"content-encoding": "gzip"})
        assert r.status_code == 200, r.text
        rec = (fake_openai if api == "openai" else fake_anthropic).requests[-1]
        assert len(rec.json["messages"][0]["content"]) == 600_000
        # Not gzip at all: a 400 in format, never a 5xx.
        r = _post(c, gw, api, gw.keys["acme"].key, content=b"\x1f\x8b\x08garbage" * 10, headers={"content-encoding": "gzip"})
        assert r.status_code == 400 and error_message(api, r)


@functools.cache
def _bomb(inflated: int) -> bytes:
    """A gzip body that inflates to `inflated` bytes of valid JSON (whitespace padding), compressed
    piecewise so the test never holds the inflated body."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    head = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]'
    out, pad, left = [z.compress(head)], b" " * (1 << 20), inflated - len(head) - 1
    while left > 0:
        out.append(z.compress(pad[: min(left, len(pad))]))
        left -= len(pad)
    return b"".join([*out, z.compress(b"}"), z.flush()])


def _envoy_allocated(gw: Stack) -> int:
    return int(httpx.get(f"{gw.admin_url}/memory", timeout=5).json()["allocated"])


@pytest.mark.alone  # bounds a duration
@pytest.mark.parametrize("factor", [2, 8])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_gzip_bomb_is_refused_by_its_inflated_size(gw: Stack, fake_openai, fake_anthropic, api: str, factor: int) -> None:
    """Envoy itself refuses the inflated body (sidegate.inflated_limit, right after the decompressor)
    as soon as it outgrows the limit: it never reaches the gateway, whose gRPC message limit it would
    break (a 503), nor stays in Envoy's memory."""
    limit = gw.sup.cfg.listener.max_request_bytes
    bomb = _bomb(factor * limit)
    assert len(bomb) < limit // 100
    before = _envoy_allocated(gw)
    with _client() as c:
        start = time.monotonic()
        r = _post(c, gw, api, gw.keys["acme"].key, content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413, r.text
        assert "too large" in error_message(api, r)
        assert time.monotonic() - start < 3.0
    assert not fake_openai.requests and not fake_anthropic.requests
    # Nothing of the inflated body is kept once the stream is gone (the transient peak while one
    # read is inflated: docs/architecture.md, "Limits").
    assert _envoy_allocated(gw) < before + 8 * 1024 * 1024


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_other_encodings_get_415(gw: Stack, fake_openai, fake_anthropic, api: str, encoding: str) -> None:
    with _client() as c:
        r = _post(c, gw, api, gw.keys["acme"].key, headers={"content-encoding": encoding})
        assert r.status_code == 415 and "Content-Encoding" in error_message(api, r)
        # identity is no encoding at all
        assert _post(c, gw, api, gw.keys["acme"].key, headers={"content-encoding": "identity"}).status_code == 200
    assert len(fake_openai.requests) + len(fake_anthropic.requests) == 1


# -- Envoy's own 431 -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["one huge header", "too many headers"])
def test_431_is_in_the_api_format(gw: Stack, how: str) -> None:
    extra = {"x-big": "a" * 70_000} if how == "one huge header" else {f"x-h{i}": "a" for i in range(120)}
    with _client() as c:
        r = _post(c, gw, "openai", gw.keys["acme"].key, headers=extra)
        assert r.status_code == 431 and r.headers["content-type"] == "application/json"
        assert "headers" in error_message("openai", r)


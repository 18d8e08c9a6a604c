"""Internal trust (sidegate/trust.py): a local process without the secret Envoy presents gets a
refusal from every internal port and nothing else; the same calls with the secret do what Envoy
gets (so each refusal is the check's doing, not a malformed call); clients through Envoy are served.

Two real stacks: the gRPC front (ext_authz + ext_proc) and the HTTP front (inline auth)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import grpc
import httpx
import openai
import orjson
import pytest
import redis
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from fault_helpers import supervise_until_up
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import ANTHROPIC_PROVIDER_KEY, FRONT_SERVICES, OPENAI_PROVIDER_KEY, Stack

from sidegate import trust, wire
from sidegate.envoy_pb import struct
from sidegate.wire import FRONT_META_HEADER, META_NS, PHASE_HEADER, TryWire, cluster_name, try_cluster_name

pytestmark = pytest.mark.e2e

HTTP_FRONT = {"services": dict(FRONT_SERVICES["http"])}


def _start(tmp_path_factory: Any, fake_openai: Any, fake_anthropic: Any, name: str, extra: dict[str, Any]) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp(name), fake_openai.url, fake_anthropic.url, extra=extra)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def grpc_stack(tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from _start(tmp_path_factory, fake_openai, fake_anthropic, "trust-grpc", {"services": dict(FRONT_SERVICES["ext_proc"])})


@pytest.fixture(scope="module")
def front_stack(tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from _start(tmp_path_factory, fake_openai, fake_anthropic, "trust-front", HTTP_FRONT)


def _token(s: Stack) -> str:
    assert s.sup is not None
    return s.sup.env[s.sup.cfg.services.internal_token_env]


def _port(s: Stack, name: str) -> int:
    assert s.sup is not None
    return int(getattr(s.sup.cfg.services, f"{name}_port"))


def _headers(**values: str) -> HeaderMap:
    return HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()])


def _metadata(token: str | None, phase: str | None = None) -> list[tuple[str, str]]:
    md = [(PHASE_HEADER, phase)] if phase else []
    return md + ([(wire.INTERNAL_TOKEN_HEADER, token)] if token is not None else [])


def _upstream_try(s: Stack, token: str | None) -> list[pb.ProcessingResponse]:
    """What an attacker sends the per-try stage: an upstream-phase stream claiming a try of an
    OpenAI model (all of it made up: metadata, cluster, attempt)."""
    req = pb.ProcessingRequest(request_headers=pb.HttpHeaders(
        headers=_headers(**{":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"})))  # fmt: skip
    req.metadata_context.filter_metadata[META_NS].CopyFrom(struct({"api": "openai", "model": "gpt-4o-mini", "tenant": "acme"}))
    req.attributes["envoy.filters.http.ext_proc"].CopyFrom(struct({"xds.cluster_name": cluster_name("openai"), "upstream.request_attempt_count": 1}))
    with grpc.insecure_channel(f"127.0.0.1:{_port(s, 'extproc')}") as ch:
        stream = pb_grpc.ExternalProcessorStub(ch).Process(iter([req]), metadata=_metadata(token, "upstream"), timeout=30)
        return list(stream)


def _gateway_call(s: Stack, token: str | None) -> list[pb.ProcessingResponse]:
    key = s.keys["acme"].key
    req = pb.ProcessingRequest(request_headers=pb.HttpHeaders(end_of_stream=True, headers=_headers(
        **{":method": "POST", ":path": "/v1/chat/completions", "authorization": f"Bearer {key}"})))  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{_port(s, 'extproc')}") as ch:
        return list(pb_grpc.ExternalProcessorStub(ch).Process(iter([req]), metadata=_metadata(token, "gateway"), timeout=30))


def _refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    assert not err.details()  # a refusal says nothing more
    return err


# -- extproc gRPC: both phases and the access-log service -------------------------------------------


def test_upstream_phase_hands_out_no_provider_key_without_the_secret(grpc_stack: Stack) -> None:
    real = _token(grpc_stack)
    almost = real[:-1] + ("B" if real.endswith("A") else "A")
    for token in (None, "", "x" * 43, almost):  # none, empty, wrong, almost right
        err = _refused(lambda t=token: _upstream_try(grpc_stack, t))
        assert OPENAI_PROVIDER_KEY not in repr(err) + str(err.trailing_metadata())
    # With the secret the same call is what Envoy's per-try stream gets: the provider's credential.
    answers = _upstream_try(grpc_stack, _token(grpc_stack))
    assert OPENAI_PROVIDER_KEY in str(answers[0].request_headers.response.header_mutation)


def test_gateway_phase_refuses_without_the_secret(grpc_stack: Stack) -> None:
    _refused(lambda: _gateway_call(grpc_stack, None))
    _refused(lambda: _gateway_call(grpc_stack, "not-the-token-0123456789"))
    assert _gateway_call(grpc_stack, _token(grpc_stack))  # with it: the stage answers


def test_access_log_service_refuses_without_the_secret(grpc_stack: Stack) -> None:
    """A made-up direct-lane log entry would otherwise be metered (or settle someone's try)."""

    def send(token: str | None) -> als_pb2.StreamAccessLogsResponse:
        msg = als_pb2.StreamAccessLogsMessage()
        msg.http_logs.log_entry.add()
        with grpc.insecure_channel(f"127.0.0.1:{_port(grpc_stack, 'extproc')}") as ch:
            return als_pb2_grpc.AccessLogServiceStub(ch).StreamAccessLogs(iter([msg]), metadata=_metadata(token), timeout=30)

    _refused(lambda: send(None))
    _refused(lambda: send("wrong-token-0123456789"))
    assert isinstance(send(_token(grpc_stack)), als_pb2.StreamAccessLogsResponse)


def test_health_stays_open_for_the_probes(grpc_stack: Stack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{_port(grpc_stack, 'extproc')}") as ch:
        got = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert got.status == health_pb2.HealthCheckResponse.SERVING


# -- authz gRPC --------------------------------------------------------------------------------------


def test_authz_refuses_without_the_secret(grpc_stack: Stack) -> None:
    def check(token: str | None) -> auth_pb.CheckResponse:
        req = auth_pb.CheckRequest()
        req.attributes.request.http.headers["authorization"] = f"Bearer {grpc_stack.keys['acme'].key}"
        req.attributes.request.http.path = "/v1/chat/completions"
        with grpc.insecure_channel(f"127.0.0.1:{_port(grpc_stack, 'authz')}") as ch:
            return auth_grpc.AuthorizationStub(ch).Check(req, metadata=_metadata(token), timeout=30)

    _refused(lambda: check(None))
    _refused(lambda: check("wrong-token-0123456789"))
    assert check(_token(grpc_stack)).status.code == 0  # with it: the key is checked (and valid)


# -- the HTTP front ----------------------------------------------------------------------------------


def _front(s: Stack, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{_port(s, 'front')}{path}", headers=headers, content=body, timeout=30)


def test_http_front_refuses_without_the_secret(front_stack: Stack) -> None:
    key = front_stack.keys["acme"].key
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    meta = orjson.dumps({"api": "openai", "model": "gpt-4o-mini", "tenant": "acme", "front": "http", "lane": "try"}).decode()
    calls = {
        "/check/v1/chat/completions": {"authorization": f"Bearer {key}", "content-type": "application/json"},
        "/try/request": {FRONT_META_HEADER: meta, TryWire.CLUSTER: try_cluster_name("openai"), TryWire.ATTEMPT: "1"},
        "/try/response": {TryWire.KEY: "0.x", TryWire.STATUS: "200"},
        "/": {"x-sidegate-route": "~replay.0.x"},  # a replay
    }
    for path, headers in calls.items():
        for token in (None, "wrong-token-0123456789"):
            sent = headers if token is None else {**headers, wire.INTERNAL_TOKEN_HEADER: token}
            r = _front(front_stack, path, sent, body)
            assert (r.status_code, r.content) == (503, b""), path  # (a 5xx: see extproc/front.py)
            assert OPENAI_PROVIDER_KEY not in str(r.headers)
    # With the secret a made-up try gets the provider's credential: what the refusal protects.
    r = _front(front_stack, "/try/request", {**calls["/try/request"], wire.INTERNAL_TOKEN_HEADER: _token(front_stack)}, body)
    assert r.status_code == 200 and OPENAI_PROVIDER_KEY in r.headers.get(TryWire.SET, "")


# -- the embedded store ------------------------------------------------------------------------------


def test_embedded_valkey_needs_its_password(grpc_stack: Stack) -> None:
    assert grpc_stack.sup is not None
    port = grpc_stack.sup.child("valkey").port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # a plain local client
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$9\r\nsg:key:xx\r\n$1\r\n1\r\n")
        assert sock.recv(200).startswith(b"-NOAUTH")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, password="guess-0123456789").ping()
    assert redis.Redis.from_url(grpc_stack.sup.redis_url).ping()  # the URL the services got carries it
    password = grpc_stack.sup.redis_url.split(":")[2].split("@")[0]
    assert password not in " ".join(grpc_stack.sup.child("valkey").cmd)  # not on a command line
    # The CLI's way in: the URL in an owner-only file of the work directory.
    url_file = grpc_stack.sup.store_url_path
    assert stat.S_IMODE(os.stat(url_file).st_mode) == 0o600
    assert redis.Redis.from_url(url_file.read_text().strip()).ping()


# -- the secret stays out of sight --------------------------------------------------------------------


def test_the_secret_is_in_no_file_others_can_read_nor_in_envoys_config_dump(grpc_stack: Stack) -> None:
    assert grpc_stack.sup is not None
    token = _token(grpc_stack)
    boot = grpc_stack.sup.workdir / "envoy.yaml"
    assert token not in boot.read_text()
    for path in (boot, grpc_stack.sup.workdir / "internal-token.yaml", grpc_stack.sup.workdir / "valkey" / "auth.conf"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    dump = httpx.get(f"{grpc_stack.admin_url}/config_dump", timeout=30).text
    assert wire.INTERNAL_TOKEN_HEADER in dump and token not in dump
    for name in os.listdir(grpc_stack.sup.workdir):  # nor in any log
        if name.endswith(".log"):
            assert token not in (grpc_stack.sup.workdir / name).read_text(errors="replace"), name


# -- the normal path through Envoy ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["grpc_stack", "front_stack"])
def test_sdk_clients_through_envoy_are_served(which: str, request: pytest.FixtureRequest, fake_openai: Any, fake_anthropic: Any) -> None:
    s: Stack = request.getfixturevalue(which)
    key = s.keys["acme"].key
    oa = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key=key, max_retries=0)
    chat = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "trust me"}])
    assert chat.choices[0].message.content
    stream = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    an = anthropic.Anthropic(base_url=s.base_url, api_key=key, max_retries=0)
    msg = an.messages.create(model="claude-haiku", max_tokens=50, messages=[{"role": "user", "content": "hello"}])
    assert msg.content[0].text
    # Envoy presented the secret; the providers got their own keys and never the secret.
    seen = [*fake_openai.requests, *fake_anthropic.requests]
    assert seen and all(wire.INTERNAL_TOKEN_HEADER not in {k.lower() for k in r.headers} for r in seen)
    assert any(OPENAI_PROVIDER_KEY in str(r.headers) for r in fake_openai.requests)
    assert any(ANTHROPIC_PROVIDER_KEY in str(r.headers) for r in fake_anthropic.requests)


# -- rotation -------------------------------------------------------------------------------------------


@pytest.fixture()
def rotate_stack(tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from _start(tmp_path_factory, fake_openai, fake_anthropic, "trust-rotate", {})


def test_rotation_envoy_takes_a_new_token_file_live_and_the_services_after_a_restart(rotate_stack: Stack) -> None:
    """docs/deployment.md, "Rotating it": a new file reaches Envoy without a restart (the services,
    still on the old secret, refuse it: nothing is served with a mismatch); restarted with the new
    one they serve again."""
    s = rotate_stack
    assert s.sup is not None
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "rotate"}]}
    headers = {"authorization": f"Bearer {s.keys['acme'].key}"}

    def status() -> int:
        return httpx.post(f"{s.base_url}/v1/chat/completions", json=body, headers=headers, timeout=10).status_code

    assert status() == 200
    new = trust.generate()
    trust.write_private(s.sup.workdir / "internal-token.yaml", trust.token_file_text(new))
    deadline = time.monotonic() + 10
    while status() != 503 and time.monotonic() < deadline:  # Envoy now presents the new one
        time.sleep(0.1)
    r = httpx.post(f"{s.base_url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"  # Envoy's own, in format
    s.sup.env[s.sup.cfg.services.internal_token_env] = new
    restarted = [c for c in s.sup.children if c.name in ("authz", "extproc")]  # (no authz with inline auth)
    for child in restarted:
        assert child.proc is not None
        child.proc.terminate()
        try:  # a stream still open waits out the drain (SIDEGATE_DRAIN_S, 30 s by default)
            child.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            log = (s.sup.workdir / f"{child.name}.log").read_text(errors="replace")
            pytest.fail(f"{child.name} did not stop within 45 s; its log ends:\n{log[-4000:]}")
    for child in restarted:
        supervise_until_up(s, child.name)  # restarts them, with the new secret
    assert status() == 200

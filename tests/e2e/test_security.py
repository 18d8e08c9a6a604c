"""Fault matrix, security rows: hashed keys at rest, key guessing throttled per source, client
credentials never forwarded, provider keys never returned or logged, private admin surfaces, and
verified TLS to https providers (a self-signed provider is refused)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fault_helpers import (
    CHAT,
    MESSAGES,
    body_for,
    error_message,
    listening_addresses,
    post,
    sync_redis,
)
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY

from sidegate import config, keys, wire
from sidegate.bootstrap import render
from sidegate.ports import free_port

pytestmark = pytest.mark.e2e
TLS_PORT = free_port()
STACK_EXTRA = {
    "providers": {"selfsigned": {"api": "openai", "base_url": f"https://localhost:{TLS_PORT}", "api_key_env": "E2E_TLS_KEY",
                                 "connect_timeout_s": 2.0}},
    "models": {"tls-model": {"routes": [{"provider": "selfsigned", "model": "gpt-4o-mini"}]}},
    "env": {"E2E_TLS_KEY": "sk-selfsigned-SECRET-0004"},
    "defaults": {"guard": None},
}  # fmt: skip
PROVIDER_SECRETS = [OPENAI_PROVIDER_KEY, ANTHROPIC_PROVIDER_KEY, "sk-selfsigned-SECRET-0004"]
ROUTES = [("openai", "gpt-4o-mini"), ("openai", "claude-haiku"), ("anthropic", "claude-haiku"), ("anthropic", "gpt-4o-mini")]


class TlsServer:
    """An HTTPS server with a self-signed certificate for `localhost`; counts completed handshakes."""

    def __init__(self, workdir: Path, port: int):
        self.port = port
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.connections = 0
        self.handshakes = 0
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(2)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    self.received += tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            except (ssl.SSLError, OSError):
                conn.close()

    def __enter__(self) -> TlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture(scope="module", autouse=True)
def tls_server(tmp_path_factory) -> Iterator[TlsServer]:
    with TlsServer(tmp_path_factory.mktemp("tls"), TLS_PORT) as srv:
        yield srv


def _client_secrets(stack) -> list[str]:
    return [k.key for k in stack.keys.values()]


# -- keys at rest ----------------------------------------------------------------------------------
def _dump_store(stack) -> bytes:
    """Every key name and value in the store, whatever its type."""
    r = sync_redis(stack)
    out = []
    try:
        for k in r.scan_iter(count=1000):
            out.append(k)
            kind = r.type(k).decode()
            if kind == "string":
                out.append(r.get(k) or b"")
            elif kind == "hash":
                out += [x for kv in r.hgetall(k).items() for x in kv]
            elif kind == "set":
                out += list(r.smembers(k))
            elif kind == "list":
                out += r.lrange(k, 0, -1)
            elif kind == "zset":
                out += [m for m, _ in r.zrange(k, 0, -1, withscores=True)]
            elif kind == "stream":
                out += [repr(e).encode() for e in r.xrange(k)]
    finally:
        r.close()
    return b"\n".join(out)


def test_no_plaintext_key_in_the_store(stack):
    for api, model in ROUTES:  # fill the ledger, quota, cache... with real traffic first
        assert post(stack, api, body_for(api, model)).status_code == 200
    post(stack, "openai", body_for("openai", "gpt-4o-mini"), key="acme-revoked")
    dump = _dump_store(stack)
    assert b"{sg}:key:" in dump and b"sha256:" in dump  # the records are there, as hashes
    for secret in _client_secrets(stack) + PROVIDER_SECRETS:
        assert secret.encode() not in dump
        assert secret.split("_", 2)[-1].encode() not in dump  # not even the secret part of a tenant key


# -- key guessing ----------------------------------------------------------------------------------
def _from(source: str) -> httpx.Client:
    """A client whose connections come from `source` (any 127.0.0.0/8 address is local on Linux)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=5)


def test_key_guessing_is_throttled_per_source(stack, fake_openai):
    """Guessing the secret of one key id from one address: 20 failures, then 429 for that id from
    that address (before any secret is checked); other keys from that address and the same id from
    other addresses are served (tests/e2e/test_input_hardening.py covers sprays of ids)."""
    url = stack.base_url + CHAT
    body = body_for("openai", "gpt-4o-mini")
    codes = []
    kid = stack.keys["globex"].id
    with _from("127.0.0.3") as attacker:
        for _ in range(30):
            guess = f"sgk_{kid}_" + keys.new_key()[0][-43:].replace("_", "x")  # well-formed, wrong secret
            r = attacker.post(url, json=body, headers={"authorization": f"Bearer {guess}"})
            codes.append(r.status_code)
        assert set(codes) <= {401, 429} and codes[0] == 401
        assert 429 in codes, codes
        first = codes.index(429)
        assert all(c == 429 for c in codes[first:]), codes
        assert r.status_code == 429 and float(r.headers["retry-after"]) >= 1
        assert error_message("openai", r)
        r = attacker.post(stack.base_url + MESSAGES, json=body_for("anthropic", "claude-haiku"),
                          headers={"x-api-key": stack.keys["globex"].key})  # fmt: skip
        assert r.status_code == 429 and error_message("anthropic", r)
        r = attacker.post(url, json=body, headers={"authorization": f"Bearer {stack.keys['acme'].key}"})
        assert r.status_code == 200  # other keys from the same address are not locked out
    with _from("127.0.0.4") as other:  # another source is not affected
        r = other.post(url, json=body, headers={"authorization": f"Bearer {stack.keys['globex'].key}"})
        assert r.status_code == 200
        r = other.post(url, json=body, headers={"authorization": f"Bearer {keys.new_key()[0]}"})
        assert r.status_code == 401
    assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"


# -- credentials in transit ------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("api", "model"), ROUTES)
def test_client_credentials_never_forwarded(stack, fake_openai, fake_anthropic, api, model, stream):
    secret = stack.keys["acme"].key
    h = {"authorization": f"Bearer {secret}", "x-api-key": secret, "api-key": secret,
         "anthropic-version": "2023-06-01"}  # fmt: skip
    path = CHAT if api == "openai" else MESSAGES
    r = httpx.post(stack.base_url + path, json=body_for(api, model, stream=stream), headers=h, timeout=10)
    assert r.status_code == 200, r.text[:200]
    recs = fake_openai.requests + fake_anthropic.requests
    assert len(recs) == 1
    rec = recs[0]
    blob = repr(rec.headers) + repr(rec.query) + rec.path + rec.body.decode(errors="replace")
    for s in _client_secrets(stack):
        assert s not in blob and s.split("_", 2)[-1] not in blob
    assert not [k for k in rec.headers if k.startswith("x-sidegate")], rec.headers


# -- provider keys ---------------------------------------------------------------------------------
def test_provider_keys_never_returned_or_logged(stack, fake_openai, fake_anthropic):
    seen: list[str] = []

    def keep(r: httpx.Response) -> None:
        seen.append(r.text + repr(dict(r.headers)))

    faults = [None, {"status": 500, "error": "boom"}, {"status": 429, "error": "slow", "retry_after": 1},
              {"status": 401, "error": "Incorrect API key provided"}, {"garbage": True}]  # fmt: skip
    for fault in faults:
        for api, model in ROUTES:
            for stream in (False, True):
                if fault:
                    (fake_openai if model == "gpt-4o-mini" else fake_anthropic).script([fault])
                keep(post(stack, api, body_for(api, model, stream=stream)))
    keep(post(stack, "openai", body_for("openai", "no-such-model")))
    keep(post(stack, "openai", body_for("openai", "tls-model")))
    blob = "\n".join(seen) + stack.logs()
    for s in PROVIDER_SECRETS:
        assert s not in blob
    for s in _client_secrets(stack):
        assert s not in blob and s.split("_", 2)[-1] not in blob


@pytest.mark.parametrize(("api", "model"), ROUTES)
@pytest.mark.parametrize("forged", [None, "", wire.TRY])
def test_provider_error_echoing_its_key_is_scrubbed(stack, fake_openai, fake_anthropic, api, model, forged):
    """`forged`: the client also names a route whose per-route config switches the direct lane's
    error filter off (the full lane's, the try lane's): the route the gateway picks decides."""
    key = OPENAI_PROVIDER_KEY if model == "gpt-4o-mini" else ANTHROPIC_PROVIDER_KEY
    fake = fake_openai if model == "gpt-4o-mini" else fake_anthropic
    fake.script([{"status": 401, "error": f"Incorrect API key provided: {key}"}])
    headers = {} if forged is None else {wire.ROUTE_HEADER: wire.route_value(model, 0) + forged}
    r = post(stack, api, body_for(api, model), headers=headers)
    assert r.status_code == 502  # the provider refused the gateway's key: not the client's fault
    assert key not in r.text


# -- exposed surfaces ------------------------------------------------------------------------------
def test_admin_and_internal_ports_are_loopback_by_default(stack):
    cfg = config.parse({"providers": {"p": {"api": "openai", "base_url": "https://api.openai.com"}},
                        "models": {"m": {"routes": [{"provider": "p"}]}}}, env={})  # fmt: skip
    assert cfg.listener.admin_host == "127.0.0.1"
    assert cfg.services.host == cfg.services.metrics_host == cfg.services.admin_host == "127.0.0.1"
    boot = render.bootstrap(cfg)
    assert boot["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    # Live: every port of the running stack except the API listener listens on loopback only.
    sup = stack.sup
    svc = sup.cfg.services
    ports = {"envoy admin": sup.cfg.listener.admin_port, "admin api": svc.admin_port, "extproc": svc.extproc_port,
             "metrics": svc.metrics_port, "valkey": sup.child("valkey").port, "xds": svc.xds_port}  # fmt: skip
    if svc.front == "http":
        ports["http front"] = svc.front_port
    if svc.auth == "ext_authz":
        ports.update({"authz": svc.authz_port, "authz metrics": svc.authz_metrics_port})
    for name, port in ports.items():
        addrs = listening_addresses(port)
        assert addrs, f"{name} ({port}) is not listening"
        assert addrs <= {"127.0.0.1", "::1"}, (name, addrs)


def test_https_provider_cluster_verifies_certificates(stack):
    clusters = [c["cluster"] for c in stack.envoy_config("dynamic_active_clusters")]  # (served over xDS)
    cluster = next(c for c in clusters if c["name"] == "provider.selfsigned")
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("UpstreamTlsContext") and tls["sni"] == "localhost"
    vc = tls["common_tls_context"]["validation_context"]
    ca = Path(vc["trusted_ca"]["filename"])
    assert ca.is_file() and ca.stat().st_size > 0
    assert {"san_type": "DNS", "matcher": {"exact": "localhost"}} in vc["match_typed_subject_alt_names"]
    assert "trust_chain_verification" not in vc  # (ACCEPT_UNTRUSTED would turn verification off)


def test_self_signed_provider_is_refused(stack, tls_server):
    before = tls_server.connections
    r = post(stack, "openai", body_for("openai", "tls-model"), timeout=10)
    assert r.status_code == 503, r.text[:300]
    assert error_message("openai", r)
    # provider.selfsigned, or provider.selfsigned~try behind the HTTP front (the try lane's cluster)
    stats = httpx.get(stack.admin_url + "/stats", params={"filter": r"provider\.selfsigned(~try)?\.ssl\."}, timeout=5).text
    failed: dict[str, int] = {}
    for ln in stats.splitlines():
        if ": " in ln:
            name = ln.split(": ")[0].rsplit(".", 1)[-1]
            failed[name] = failed.get(name, 0) + int(ln.split(": ")[1])
    assert failed.get("fail_verify_error", 0) >= 1, stats  # refused for its certificate, not for the network
    assert tls_server.connections > before  # Envoy did connect,
    assert tls_server.received == b""  # but no request (nor the provider key) went over that connection

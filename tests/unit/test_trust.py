"""The internal token (sidegate/trust.py): the check, where it comes from, and its files."""

from __future__ import annotations

import asyncio
import hmac
import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml

from sidegate import config, trust, wire
from sidegate.bootstrap import render
from sidegate.cli import main as cli_main

TOKEN = "a-token-of-enough-length-0123456789"


def _cfg(tmp_path: Path) -> config.SidegateConfig:
    return config.parse({
        "services": {"internal_token_file": str(tmp_path / "token.yaml")},
        "providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:1", "api_key_env": "K"}},
        "models": {"m": {"routes": [{"provider": "p"}]}},
    }, env={})  # fmt: skip


def test_only_the_exact_secret_passes() -> None:
    t = trust.Token(TOKEN)
    assert t.valid(TOKEN) and t.valid(TOKEN.encode())
    for wrong in (None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "é" + TOKEN[1:], " " + TOKEN):
        assert not t.valid(wrong), wrong
    assert t.valid_metadata([("x-sidegate-phase", "upstream"), (wire.INTERNAL_TOKEN_HEADER, TOKEN)])
    assert not t.valid_metadata([("x-sidegate-phase", "upstream")]) and not t.valid_metadata(None)
    assert not t.valid_metadata([(wire.INTERNAL_TOKEN_HEADER, "nope")])
    assert TOKEN not in repr(t) and TOKEN not in str(t)
    with pytest.raises(trust.MissingToken):
        trust.Token("")


def test_the_comparison_is_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: the comparison is the one made for secrets, never `==`."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(trust.hmac, "compare_digest", spy)
    assert not trust.Token(TOKEN).valid("guess")
    assert calls == [(b"guess", TOKEN.encode())]


def test_token_comes_from_the_environment_then_the_file(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    with pytest.raises(trust.MissingToken, match="SIDEGATE_INTERNAL_TOKEN"):
        trust.load_token(cfg, env={})
    with pytest.raises(trust.MissingToken):  # too short to be a secret
        trust.load_token(cfg, env={"SIDEGATE_INTERNAL_TOKEN": "short"})
    trust.write_private(tmp_path / "token.yaml", trust.token_file_text(TOKEN))
    assert trust.load_token(cfg, env={}) == TOKEN
    assert trust.load_token(cfg, env={"SIDEGATE_INTERNAL_TOKEN": "from-the-env-0123456789"}) == "from-the-env-0123456789"
    (tmp_path / "token.yaml").write_text("not: [an, sds, file]")
    with pytest.raises(trust.MissingToken):
        trust.load_token(cfg, env={})


def test_token_file_is_private_and_an_envoy_sds_resource(tmp_path: Path) -> None:
    path = tmp_path / "d" / "token.yaml"
    path.parent.mkdir()
    path.write_text("old")
    os.chmod(path, 0o644)
    trust.write_private(path, trust.token_file_text(TOKEN))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    (res,) = doc["resources"]
    assert res["@type"].endswith("tls.v3.Secret") and res["name"] == trust.SECRET_NAME
    assert trust.read_token_file(path) == TOKEN
    assert trust.read_token_file(tmp_path / "missing") == ""


def test_cli_writes_a_token_file_and_keeps_one_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yaml"
    assert cli_main(["internal-token", "-o", str(path)]) == 0
    first = trust.read_token_file(path)
    assert len(first) >= 32 and first not in capsys.readouterr().out
    assert cli_main(["internal-token", "-o", str(path), "--keep"]) == 0
    assert trust.read_token_file(path) == first
    assert cli_main(["internal-token", "-o", str(path)]) == 0
    assert trust.read_token_file(path) != first


def test_sidegate_serve_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "services": {"internal_token_file": str(tmp_path / "absent.yaml")},
        "store": {"url": "redis://127.0.0.1:1/0"},
        "providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:1", "api_key_env": "K"}},
        "models": {"m": {"routes": [{"provider": "p"}]}},
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SIDEGATE_INTERNAL_TOKEN"}
    for service in ("authz", "extproc"):
        out = subprocess.run([sys.executable, "-m", "sidegate.cli", "serve", service, "-c", str(cfg)],
                             capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
        assert out.returncode != 0 and "no internal token" in out.stderr, out.stderr[-500:]


def test_every_sidegate_cluster_sets_the_token(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg.services.auth, cfg.services.front, cfg.services.extproc_workers = "inline", "http", 2
    boot = render.bootstrap(cfg)
    local = [c for c in boot["static_resources"]["clusters"] if c["name"].startswith("sidegate_")]
    assert {c["name"] for c in local} >= {"sidegate_extproc", "sidegate_front", "sidegate_front.0", "sidegate_front.1"}
    cfg.services.auth, cfg.services.front = "ext_authz", "ext_proc"
    local += [c for c in render.bootstrap(cfg)["static_resources"]["clusters"] if c["name"] == "sidegate_authz"]
    assert "sidegate_authz" in {c["name"] for c in local}
    for c in local:
        filters = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
        assert filters[0] == trust.injector(str(tmp_path / "token.yaml")), c["name"]
    assert boot["node"] == trust.NODE


def test_require_aborts_unauthenticated_without_details() -> None:
    class Context:
        def __init__(self, md: list[tuple[str, str]]):
            self.md, self.aborted = md, None

        def invocation_metadata(self) -> list[tuple[str, str]]:
            return self.md

        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            self.aborted = (code, details)
            raise RuntimeError("aborted")

    ok = Context([(wire.INTERNAL_TOKEN_HEADER, TOKEN)])
    asyncio.run(trust.require(trust.Token(TOKEN), ok))  # type: ignore[arg-type]
    assert ok.aborted is None
    bad = Context([(wire.INTERNAL_TOKEN_HEADER, "guess-0123456789")])
    with pytest.raises(RuntimeError):
        asyncio.run(trust.require(trust.Token(TOKEN), bad))  # type: ignore[arg-type]
    assert bad.aborted == (grpc.StatusCode.UNAUTHENTICATED, "")


def test_http_front_answers_a_caller_without_the_token_with_nothing() -> None:
    """Whatever the request (a check, a try lane call, a replay), no token: an empty 503, the
    connection closed, and the front never ran (a real try would have been held)."""
    from extproc.front import Front, FrontServer
    from sidegate.core.pipeline import Gateway

    seen: list[str] = []

    class Spy(Front):
        def handle_now(self, target: str, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
            seen.append(headers.get(wire.INTERNAL_TOKEN_HEADER, "(popped)"))
            return super().handle_now(target, headers, body)

    async def ask(port: int, head: str, to_eof: bool = True) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {head}content-length: 0\r\n\r\n".encode())
        if to_eof:  # a refusal closes the connection
            answer = await asyncio.wait_for(reader.read(), 5)
        else:
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answer += await asyncio.wait_for(reader.readexactly(length), 5)
        writer.close()
        return answer

    async def go() -> list[bytes]:
        server = FrontServer(Spy(Gateway([]), 0), trust.Token(TOKEN))
        await server.start("127.0.0.1", 0)
        assert server.server is not None
        port = server.server.sockets[0].getsockname()[1]
        out = [await ask(port, f"{path} HTTP/1.1\r\n{extra}") for path in ("/check/v1/chat/completions", "/try/request", "/try/abandon", "/")
               for extra in ("", f"{wire.INTERNAL_TOKEN_HEADER}: wrong-0123456789\r\n")]  # fmt: skip
        out.append(await ask(port, f"/ HTTP/1.1\r\n{wire.INTERNAL_TOKEN_HEADER}: {TOKEN}\r\n", to_eof=False))
        await server.close()
        return out

    *refused, accepted = asyncio.run(go())
    assert all(a == b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" for a in refused), refused
    assert seen == ["(popped)"]  # only the call with the token reached the front, without the token in it
    assert accepted.startswith(b"HTTP/1.1 503") and b"expired" in accepted  # a replay of nothing held


def test_http_front_refuses_a_caller_without_the_token_before_its_body() -> None:
    """A caller without the token declaring a huge body is answered at its head: the front never
    waits for (nor buffers) a body only Envoy may send."""
    from extproc.front import Front, FrontServer
    from sidegate.core.pipeline import Gateway

    async def go() -> bytes:
        server = FrontServer(Front(Gateway([]), 0), trust.Token(TOKEN))
        await server.start("127.0.0.1", 0)
        assert server.server is not None
        port = server.server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /check/v1/chat/completions HTTP/1.1\r\ncontent-length: 1000000000\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)  # the body never comes: only a refusal ends this
        writer.close()
        await server.close()
        return answer

    assert asyncio.run(go()) == b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def test_envoy_does_not_start_without_its_token_file(tmp_path: Path) -> None:
    """No token file, no Envoy (rather than an Envoy whose every call the services refuse)."""
    from sidegate.supervisor import envoy_binary

    boot = tmp_path / "envoy.yaml"
    boot.write_text(render.render_yaml(_cfg(tmp_path)))  # names tmp_path/token.yaml, not written
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(boot), "--use-dynamic-base-id", "-l", "error"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and str(tmp_path / "token.yaml") in out.stdout + out.stderr
    trust.write_private(tmp_path / "token.yaml", trust.token_file_text(TOKEN))
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(boot), "--use-dynamic-base-id", "-l", "error"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr[-1000:]

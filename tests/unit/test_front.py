"""HTTP front (extproc/front.py) without Envoy: what each gateway outcome becomes as an HTTP
answer, held replies, the header parser, and the HTTP/1.1 server on a real socket."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest

from extproc.front import Front, FrontServer, HeldReplies, meta_header, parse_head
from sidegate.core.context import Reply, RequestContext
from sidegate.core.pipeline import Gateway
from sidegate.errors import GatewayError
from sidegate.trust import Token

KEY_HEADERS = {"authorization": "Bearer sk-client", "x-request-id": "rid-1", "x-sidegate-source": "10.0.0.9"}
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


class Script:
    """A stage doing what the test says: route, change the body, refuse, or answer."""

    name = "script"

    def __init__(self, action: str):
        self.action = action
        self.seen: RequestContext | None = None

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        self.seen = ctx
        ctx.tenant, ctx.model, ctx.route = "acme", "m", "m"
        ctx.remove_headers.append("authorization")
        ctx.response_headers["x-ratelimit-limit-requests"] = "10"
        if self.action == "refuse":
            raise GatewayError(429, "slow down", code="rate_limit_exceeded", headers={"retry-after": "3"})
        if self.action == "unavailable":
            raise GatewayError(503, "store down", code="quota_store_unavailable", headers={"retry-after": "1"})
        if self.action == "hit":
            return Reply(200, b'{"cached":true}', {"content-type": "application/json", "x-sidegate-cache": "hit-exact"}, "cache")
        if self.action == "redact":
            ctx.body_changed = True
            ctx.meta["restore"] = {"<EMAIL_1>": "a@b.c"}
        if self.action == "boom":
            raise RuntimeError("bug")
        ctx.meta["lane"] = "direct"
        return None


def front(action: str) -> tuple[Front, Script]:
    stage = Script(action)
    return Front(Gateway([stage]), worker=3), stage


def check(f: Front, path: str = "/v1/chat/completions", headers: dict[str, str] | None = None):
    return asyncio.run(f.handle("POST", "/check" + path, dict(headers or KEY_HEADERS), BODY))


def test_forward_answer_carries_route_metadata_and_removals():
    f, stage = front("go")
    ans = check(f, headers={**KEY_HEADERS, "x-sidegate-meta": "forged", "x-sidegate-route": "evil"})
    assert ans.status == 200 and ans.body == b""
    h = ans.headers
    assert h["x-sidegate-route"] == "m" and h["x-sidegate-lane"] == "direct" and h["x-sidegate-api"] == "openai"
    meta = json.loads(h["x-sidegate-meta"])
    assert meta["tenant"] == "acme" and meta["front"] == "http" and "response_headers" not in meta
    assert h["x-ratelimit-limit-requests"] == "10"
    assert h["x-sidegate-tenant"] == "acme" and h["x-sidegate-model"] == "m" and h["x-sidegate-stream"] == "false"
    removed = h["x-envoy-auth-headers-to-remove"].split(",")
    assert "authorization" in removed and "x-sidegate-meta" in removed
    assert "x-sidegate-route" not in removed and "x-sidegate-source" not in removed  # ours, not the client's
    assert stage.seen is not None and stage.seen.source == "10.0.0.9" and stage.seen.headers[":path"] == "/v1/chat/completions"


def test_refusal_is_answered_directly_in_the_api_format():
    f, _ = front("refuse")
    ans = check(f, "/v1/messages")
    assert ans.status == 429 and ans.headers["retry-after"] == "3"
    doc = orjson.loads(ans.body)
    assert doc["type"] == "error" and doc["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("action", ["hit", "unavailable", "boom"])
def test_hits_and_5xx_are_held_and_replayed_once(action: str):
    f, _ = front(action)
    ans = check(f)
    route = ans.headers["x-sidegate-route"]
    assert ans.status == 200 and route.startswith("~replay.3.")
    # Held under a key the front made up: the client's request id finds nothing.
    other = asyncio.run(f.handle("POST", "/v1/chat/completions", {"x-request-id": "rid-1", "x-sidegate-route": "~replay.3.x"}, BODY))
    assert other.status == 503
    got = asyncio.run(f.handle("POST", "/v1/chat/completions", {"x-request-id": "rid-1", "x-sidegate-route": route}, BODY))
    want = {"hit": 200, "unavailable": 503, "boom": 500}[action]
    assert got.status == want
    if action == "unavailable":
        assert got.headers["retry-after"] == "1" and orjson.loads(got.body)["error"]["code"] == "quota_store_unavailable"
    again = asyncio.run(f.handle("POST", "/v1/chat/completions", {"x-request-id": "rid-1", "x-sidegate-route": route}, BODY))
    assert again.status == 503 and "expired" in orjson.loads(again.body)["error"]["message"]
    assert check(f).headers["x-sidegate-route"] != route  # every hold has its own key


def test_redaction_becomes_a_per_try_instruction():
    f, _ = front("redact")
    meta = json.loads(check(f).headers["x-sidegate-meta"])
    assert meta["redact"] is True and "restore" not in meta  # PII values never travel in a header


def test_unknown_path_is_404_in_format():
    f, _ = front("go")
    ans = check(f, "/v1/audio/speech")
    assert ans.status == 404 and orjson.loads(ans.body)["error"]["message"].startswith("Unknown path")


def test_meta_header_is_ascii_json():
    assert meta_header({"a": 1}) == '{"a":1}'
    value = meta_header({"model": "modèle"})
    assert value.isascii() and json.loads(value) == {"model": "modèle"}


def test_held_replies_expire_and_are_bounded():
    held = HeldReplies(capacity=2, ttl_s=0.0)
    held.put("a", Reply(200, b""))
    assert held.pop("a") is None  # expired
    held = HeldReplies(capacity=2)
    for k in "abc":
        held.put(k, Reply(200, k.encode()))
    assert held.pop("a") is None and held.pop("c") is not None


def test_parse_head():
    method, target, headers = parse_head(b"POST /check/v1/messages HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2")
    assert (method, target, headers) == ("POST", "/check/v1/messages", {"host": "x", "x-a": "2"})
    with pytest.raises(ValueError):
        parse_head(b"POST / HTTP/1.1\r\nno-colon-here")


def test_server_keep_alive_split_packets_and_bad_requests():
    async def go() -> None:
        f, _ = front("go")
        server = FrontServer(f, Token("front-test-token-0123456789"))
        await server.start("127.0.0.1", 0)
        assert server.server is not None
        port = server.server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (f"POST /check/v1/chat/completions HTTP/1.1\r\nauthorization: Bearer k\r\nx-request-id: r\r\n"
                f"x-sidegate-internal-token: front-test-token-0123456789\r\n"
                f"content-length: {len(BODY)}\r\n\r\n").encode()  # fmt: skip
        for _ in range(2):  # two requests on one connection, the second split mid-body
            writer.write(head + BODY[:5])
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(BODY[5:])
            status = await reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        writer.write(b"POST / HTTP/1.1\r\nx-sidegate-internal-token: front-test-token-0123456789\r\ntransfer-encoding: chunked\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 400")
        writer.close()
        await server.close()

    asyncio.run(go())


def test_answer_encoding_never_splits_headers():
    from extproc.front import _encode

    raw = _encode(Reply(200, b"{}", {"x-a": "one\r\nx-evil: 1", "x-b": "modèle 模型"}))
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK" and b"x-evil: 1" not in lines and body == b"{}"
    assert any(line.startswith(b"x-b: ") for line in lines)

"""extproc/prepared.py: what the HTTP front prepares for a full-lane stream's first try, and what
the per-try stage takes from the metadata (the e2e proof: tests/e2e/test_stream_prepared.py)."""

from __future__ import annotations

import orjson
from google.protobuf.struct_pb2 import Struct

from extproc.prepared import authz_fields, prepare_stream, prepared_for
from extproc.trylane import decode_set, encode_changes
from sidegate import config as config_mod
from sidegate.core.tries import HeaderChanges, TryStage
from sidegate.wire import TryWire

ENV = {"A_KEY": "sk-ant-x", "O_KEY": "sk-oai-x"}
CFG = {
    "providers": {"anthropic": {"api": "anthropic", "base_url": "http://a.test", "api_key_env": "A_KEY"},
                  "openai": {"api": "openai", "base_url": "http://o.test", "api_key_env": "O_KEY"}},
    "models": {"claude": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
               "spread": {"routes": [{"provider": "anthropic", "priority": 0}, {"provider": "openai", "priority": 0}]}},
}  # fmt: skip
META = {"api": "openai", "model": "claude", "stream": True, "want_usage": True, "front": "http"}
BODY = orjson.dumps({"model": "claude", "messages": [{"role": "user", "content": "héllo"}], "stream": True})


def _stage() -> TryStage:
    return TryStage(config_mod.parse(CFG, env=ENV))


def _prep(stage: TryStage, meta: dict, body: bytes = BODY, rewritten: bool = False) -> dict[str, str]:
    return prepare_stream(stage, meta, body, rewritten=rewritten)


def _struct(headers: dict[str, str]) -> dict[str, str] | None:
    """As the per-try stage reads them from the HTTP front's ext_authz metadata."""
    s = Struct()
    s.update(headers)
    return authz_fields(s)


def test_set_header_round_trip():
    changes = HeaderChanges(
        set={":path": "/v1/messages?x=1&y=%2", "anthropic-version": "2023-06-01", "e": ""}
    )
    assert decode_set(encode_changes(changes)[TryWire.SET]) == changes.set
    assert decode_set("") == {}


def test_the_first_try_is_translated_at_check_time_and_taken_by_its_try():
    stage = _stage()
    headers = _prep(stage, META)
    assert headers[TryWire.PREPARED] == "provider.anthropic" and headers[TryWire.BODY].isascii()
    assert TryWire.CLIENT_BODY not in headers  # no fill asked
    sets = decode_set(headers[TryWire.SET])
    assert sets[":path"] == "/v1/messages" and sets["content-length"] == str(len(headers[TryWire.BODY]))
    assert "x-api-key" not in sets  # the per-try stage adds the credential itself
    t = stage.start_try(META, "provider.anthropic", 1)
    body, got, client = prepared_for(t, _struct(headers))
    assert orjson.loads(body) == orjson.loads(t.request_body(BODY)[0]) and got == sets and client == b""
    # Only the first try of the cluster it names; a blanked body is not used again.
    assert prepared_for(stage.start_try(META, "provider.anthropic", 2), _struct(headers)) is None
    assert prepared_for(t, _struct({**headers, TryWire.BODY: ""})) is None
    assert prepared_for(t, None) is None


def test_not_prepared_when_the_provider_is_not_known_or_the_body_too_large():
    stage = _stage()
    assert _prep(stage, {**META, "model": "spread"}) == {}  # Envoy picks by weight
    big = orjson.dumps(
        {"model": "claude", "messages": [{"role": "user", "content": "x" * 40000}], "stream": True}
    )
    assert _prep(stage, META, big) == {}
    assert _prep(stage, META, b"{not json") == {}  # the per-try stage answers it, in the client's format
    pinned = {**META, "model": "spread", "pin": "openai"}  # a routing policy's pick: known
    assert _prep(stage, {**pinned, "want_usage": False})[TryWire.PREPARED] == "provider.openai"
    assert _prep(stage, pinned) == {}  # taken as is: the body round trip is skipped anyway


def test_only_a_full_lane_stream_with_the_clients_body_is_prepared():
    stage = _stage()
    assert _prep(stage, META)
    assert _prep(stage, {**META, "stream": False}) == {}  # the try lane's
    assert _prep(stage, {**META, "lane": "direct"}) == {}
    assert _prep(stage, META, rewritten=True) == {}  # a stage rewrote the body (PII)

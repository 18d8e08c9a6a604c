from sidegate import keys
from sidegate.features.auth.decide import Allow, Deny, decide, presented_key
from sidegate.keystore import KeyRecord


def _records(*recs: KeyRecord) -> dict[str, KeyRecord]:
    return {r.id: r for r in recs}


KEY, KID = keys.new_key("abcd1234")
REC = KeyRecord(id=KID, tenant="acme", hash=keys.hash_key(KEY), models=("gpt-4o",))


def test_key_format_and_hash_roundtrip():
    assert keys.key_id(KEY) == "abcd1234"
    assert keys.verify(KEY, keys.hash_key(KEY))
    assert not keys.verify(KEY + "x", keys.hash_key(KEY))
    assert keys.key_id("sk-not-ours") is None
    assert "abcd1234" in keys.redact(KEY) and KEY.split("_", 2)[2] not in keys.redact(KEY)


def test_pepper_changes_hash():
    assert keys.hash_key(KEY, b"pepper") != keys.hash_key(KEY, b"")


def test_presented_key_sources():
    assert presented_key({"authorization": f"Bearer {KEY}"}) == KEY
    assert presented_key({"x-api-key": KEY}) == KEY
    assert presented_key({"api-key": KEY}) == KEY
    assert presented_key({"authorization": "Basic abc"}) is None


def test_allow_passes_identity():
    r = decide({":path": "/v1/chat/completions", "authorization": f"Bearer {KEY}"}, _records(REC))
    assert isinstance(r, Allow) and r.tenant == "acme" and r.models == ("gpt-4o",)


def test_unknown_wrong_revoked_expired_are_401_in_the_right_format():
    other, _ = keys.new_key("zzzz9999")
    wrong = KEY[:-1] + ("A" if KEY[-1] != "A" else "B")
    for headers, recs, reason in [
        ({":path": "/v1/chat/completions"}, _records(REC), "missing_key"),
        ({":path": "/v1/chat/completions", "authorization": "Bearer sk-foo"}, _records(REC), "malformed_key"),
        ({":path": "/v1/chat/completions", "authorization": f"Bearer {other}"}, _records(REC), "unknown_key"),
        ({":path": "/v1/chat/completions", "authorization": f"Bearer {wrong}"}, _records(REC), "unknown_key"),
    ]:
        r = decide(headers, recs)
        assert isinstance(r, Deny) and r.status == 401 and r.reason == reason
        assert b'"error"' in r.body and KEY.encode() not in r.body
    revoked = KeyRecord(id=KID, tenant="acme", hash=REC.hash, revoked=True)
    r = decide({":path": "/v1/messages", "x-api-key": KEY}, _records(revoked))
    assert isinstance(r, Deny) and r.reason == "revoked_key"
    assert r.body.startswith(b'{"type":"error"')  # Anthropic format on /v1/messages
    expired = KeyRecord(id=KID, tenant="acme", hash=REC.hash, expires_at=100.0)
    r = decide({":path": "/v1/chat/completions", "x-api-key": KEY}, _records(expired), now=200.0)
    assert isinstance(r, Deny) and r.reason == "expired_key"

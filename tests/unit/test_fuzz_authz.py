"""Fuzz sidegate.features.auth.decide: any header dict gives Allow or a 401 Deny whose body is a client-format error."""

from __future__ import annotations

import time

from fuzz_helpers import fuzz
from hypothesis import example, given
from hypothesis import strategies as st
from translate_helpers import validate_error

from sidegate import keys
from sidegate.core.intake import inbound_api
from sidegate.errors import Api
from sidegate.features.auth.decide import Allow, Deny, decide
from sidegate.keystore import KeyRecord

GOOD, GOOD_ID = keys.new_key("goodkey1")
REVOKED, REVOKED_ID = keys.new_key("revoked1")
EXPIRED, EXPIRED_ID = keys.new_key("expired1")
RECORDS = {
    GOOD_ID: KeyRecord(GOOD_ID, "acme", keys.hash_key(GOOD, pepper=b""), ("gpt-x",)),
    REVOKED_ID: KeyRecord(REVOKED_ID, "acme", keys.hash_key(REVOKED, pepper=b""), revoked=True),
    EXPIRED_ID: KeyRecord(EXPIRED_ID, "acme", keys.hash_key(EXPIRED, pepper=b""), expires_at=1.0),
}
_FORGED = f"sgk_{GOOD_ID}_" + "A" * 43
key_like = st.sampled_from(
    [GOOD, REVOKED, EXPIRED, _FORGED, GOOD + " ", "sgk_", "sgk_UPPER123_" + "a" * 30]
) | st.text(max_size=40)
header_values = st.one_of(
    key_like,
    key_like.map(lambda k: f"Bearer {k}"),
    key_like.map(lambda k: f"bearer  {k}"),
    st.sampled_from(["Basic abc", "Bearer", "Bearer ", ""]),
    st.text(max_size=30),
)
header_names = st.sampled_from([":path", "authorization", "x-api-key", "api-key", "content-type"]) | st.text(
    max_size=12
)
paths = st.sampled_from(
    ["/v1/messages", "/v1/chat/completions", "/v1/messages?beta=true", "/", ""]
) | st.text(max_size=20)


@fuzz(300)
@given(headers=st.dictionaries(header_names, header_values, max_size=5), path=paths | st.none())
@example(headers={}, path="/v1/models?key=x")  # a Gemini client's (found by a random CI draw)
def test_decide_any_headers(headers: dict[str, str], path: str | None) -> None:
    if path is not None:
        headers[":path"] = path
    result = decide(headers, RECORDS, now=time.time())
    if isinstance(result, Allow):
        assert (result.tenant, result.key_id, result.models) == ("acme", GOOD_ID, ("gpt-x",))
        return
    assert isinstance(result, Deny)
    assert result.status == 401 and result.reason
    # The client's format, as the intake names it for this path and these headers (a Gemini client's
    # too, since issue 24: e.g. a models path with `?key=`); the intake's table has its own tests.
    assert result.api is inbound_api(headers.get(":path", "/"), headers)
    if headers.get(":path", "/").startswith("/v1/messages"):
        assert result.api is Api.ANTHROPIC
    validate_error(result.api, result.body)
    assert GOOD not in result.body.decode() and REVOKED not in result.body.decode()  # never echo a key

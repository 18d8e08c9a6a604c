from sidegate import keys
from sidegate.features.auth.decide import Allow, authorize, throttled
from sidegate.features.auth.throttle import FailureThrottle
from sidegate.keystore import KeyRecord

GOOD, GOOD_ID = keys.new_key("acme0001")
OTHER, OTHER_ID = keys.new_key("glob0001")
RECORDS = {
    GOOD_ID: KeyRecord(id=GOOD_ID, tenant="acme", hash=keys.hash_key(GOOD)),
    OTHER_ID: KeyRecord(id=OTHER_ID, tenant="globex", hash=keys.hash_key(OTHER)),
}
CHAT = {":path": "/v1/chat/completions"}


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def _auth(th: FailureThrottle, key: str | None, source: str = "10.0.0.1", path: str = "/v1/chat/completions"):
    headers = {":path": path}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return authorize(headers, RECORDS, th, source)


def _wrong(kid: str) -> str:
    return f"sgk_{kid}_" + "x" * 43


def test_blocks_after_max_failures_then_cools_down():
    clock = Clock()
    th = FailureThrottle(max_failures=3, window_s=60, block_s=10, clock=clock)
    for _ in range(2):
        th.failure("1.2.3.4", "abcd1234")
    assert th.blocked_key("1.2.3.4", "abcd1234") == 0
    th.failure("1.2.3.4", "abcd1234")
    assert 9.9 < th.blocked_key("1.2.3.4", "abcd1234") <= 10
    assert th.blocked_key("5.6.7.8", "abcd1234") == 0  # other sources unaffected
    assert th.blocked_key("1.2.3.4", "other123") == 0  # other ids unaffected
    assert th.blocked("1.2.3.4") == 0  # the address bound is 10x higher
    clock.t += 10.1
    assert th.blocked_key("1.2.3.4", "abcd1234") == 0


def test_window_resets_old_failures():
    clock = Clock()
    th = FailureThrottle(max_failures=3, window_s=60, block_s=10, clock=clock)
    th.failure("a", "k")
    th.failure("a", "k")
    clock.t += 61
    th.failure("a", "k")
    assert th.blocked_key("a", "k") == 0


def test_bounded_memory():
    th = FailureThrottle(max_sources=10)
    for i in range(100):
        th.failure(f"10.0.0.{i}", f"id{i:06d}")
        th.failure("10.9.9.9", f"sp{i:06d}")  # a spray of attacker-chosen ids
    assert len(th.keys.state) == 10 and len(th.sources.state) == 10


def test_failures_of_other_keys_never_refuse_a_valid_key_from_the_same_address():
    th = FailureThrottle(max_failures=3, block_s=60, clock=Clock())
    for i in range(50):  # a spray of random ids, malformed and missing keys: far past both bounds
        _auth(th, [keys.new_key()[0], "sgk_nope", None][i % 3])
        _auth(th, _wrong(OTHER_ID))  # and guesses at another tenant's id
    assert th.blocked("10.0.0.1") > 0 and th.blocked_key("10.0.0.1", OTHER_ID) > 0
    assert isinstance(_auth(th, GOOD), Allow)
    assert isinstance(_auth(th, OTHER, source="10.0.0.2"), Allow)  # same id, other address


def test_guessing_one_id_is_refused_before_the_secret_is_checked():
    th = FailureThrottle(max_failures=3, block_s=60, clock=Clock())
    assert [_auth(th, _wrong(GOOD_ID)).status for _ in range(4)] == [401, 401, 401, 429]
    d = _auth(th, GOOD)  # the right secret is not even checked while its id is blocked here
    assert d.status == 429 and d.reason == "throttled" and int(d.headers["retry-after"]) == 60
    assert isinstance(_auth(th, GOOD, source="10.0.0.2"), Allow)


def test_a_spray_from_one_address_is_throttled_at_the_higher_bound():
    th = FailureThrottle(max_failures=3, block_s=60, clock=Clock(), max_source_failures=12)
    codes = [_auth(th, keys.new_key()[0], path="/v1/messages").status for _ in range(14)]
    assert codes == [401] * 11 + [429] * 3
    d = _auth(th, "sgk_bad", path="/v1/messages")
    assert d.status == 429 and d.body.startswith(b'{"type":"error"')
    assert _auth(th, keys.new_key()[0], source="10.0.0.2").status == 401  # other addresses unaffected


def test_guesses_stay_bounded_when_the_address_is_already_blocked():
    """Blocking the address first must not turn each guess at one id into a full verification."""
    th = FailureThrottle(max_failures=3, block_s=60, clock=Clock(), max_source_failures=5)
    for _ in range(10):
        _auth(th, keys.new_key()[0])
    for _ in range(3):
        assert _auth(th, _wrong(GOOD_ID)).status == 429
    assert th.blocked_key("10.0.0.1", GOOD_ID) > 0


def test_unknown_and_known_ids_get_the_same_answers():
    th = FailureThrottle(max_failures=3, block_s=60, clock=Clock())
    unknown = [_auth(th, _wrong("zzzz9999")).status for _ in range(5)]
    known = [_auth(th, _wrong(GOOD_ID)).status for _ in range(5)]
    assert unknown == known == [401, 401, 401, 429, 429]


def test_throttled_reply_in_the_right_format():
    d = throttled({":path": "/v1/messages"}, 2.5)
    assert d.status == 429 and d.headers["retry-after"] == "3" and d.body.startswith(b'{"type":"error"')
    d = throttled(CHAT, 0.2)
    assert b'"auth_rate_limited"' in d.body and d.headers["retry-after"] == "1"

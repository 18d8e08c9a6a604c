from sidegate.config import BreakerConfig, ModelConfig
from sidegate.core.completion import parse_retry_after
from sidegate.credentials.pool import KeyPool
from sidegate.features.route.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


CHAIN = ModelConfig.model_validate({"routes": [{"provider": "a"}, {"provider": "b"}, {"provider": "c"}]})
CFG = BreakerConfig(failures=3, ejection_s=10, max_ejection_s=40)


def test_consecutive_failures_eject_then_recover_with_backoff():
    clock = Clock()
    b = Breaker(clock)
    for _ in range(2):
        b.record("a", 500, CFG)
    assert b.start_index(CHAIN) == 0
    b.record("a", 0, CFG)  # a timeout/reset counts
    assert b.ejected("a") and b.start_index(CHAIN) == 1
    clock.t += 10.1
    assert b.start_index(CHAIN) == 0  # traffic returns
    for _ in range(3):
        b.record("a", 503, CFG)
    clock.t += 15  # second ejection is twice as long
    assert b.ejected("a")
    b.record("a", 200, CFG)
    assert b.ejected("a")  # a success resets the counters, the running ejection window still applies
    clock.t += 10
    assert not b.ejected("a")


def test_success_resets_and_4xx_do_not_count():
    b = Breaker(Clock())
    for status in (500, 500, 200, 500, 500, 400, 404, 422):
        b.record("a", status, CFG)
    assert not b.ejected("a")


def test_retry_after_ejects_at_once_capped():
    clock = Clock()
    b = Breaker(clock)
    b.record("a", 429, CFG, retry_after_s=5)
    assert b.ejected("a") and b.start_index(CHAIN) == 1
    b.record("b", 429, CFG, retry_after_s=999)
    assert b.start_index(CHAIN) == 2
    clock.t += 41
    assert b.start_index(CHAIN) == 0


def test_all_ejected_tries_anyway():
    b = Breaker(Clock())
    for p in "abc":
        b.record(p, 429, CFG, retry_after_s=5)
    assert b.start_index(CHAIN) == 0


def test_weighted_groups():
    m = ModelConfig.model_validate({"routes": [
        {"provider": "east", "priority": 0, "weight": 3}, {"provider": "west", "priority": 0, "weight": 1},
        {"provider": "backup"}]})  # fmt: skip
    assert [[r.provider for r in g] for g in m.groups()] == [["east", "west"], ["backup"]]


def test_parse_retry_after():
    assert parse_retry_after({"retry-after": "7"}) == 7
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after({}) is None


def test_key_pool_is_weighted_and_smooth():
    pool = KeyPool([("k1", 2), ("k2", 1)])
    picks = [pool.next() for _ in range(9)]
    assert picks.count("k1") == 6 and picks.count("k2") == 3
    assert "k1k1k1" not in "".join(picks)


def test_breaker_observer_counts_provider_tries_of_either_lane():
    from sidegate import config
    from sidegate.core.completion import Completion
    from sidegate.features.route.feature import RouteFeature

    cfg = config.parse({
        "providers": {"a": {"api": "openai", "base_url": "http://a"}, "b": {"api": "openai", "base_url": "http://b"}},
        "models": {"m": {"routes": [{"provider": "a"}, {"provider": "b"}], "breaker": {"failures": 2}}},
    }, env={})  # fmt: skip
    b = Breaker(Clock())
    observe = RouteFeature(cfg, b).on_complete

    def done(provider: str, status: int, attempt: int = 1, aborted: bool = False) -> Completion:
        return Completion(meta={"model": "m"}, provider=provider, upstream_model="m", status=status, usage=None,
                          final=True, streamed=False, aborted=aborted, attempt=attempt)  # fmt: skip

    for c in (done("cache", 500, attempt=0), done("gateway", 503, attempt=0), done("none", 0, aborted=True)):
        observe(c)  # not provider tries: ignored
    assert not b.ejected("a", "m")
    observe(done("a", 503))
    observe(done("a", 0, aborted=True))  # no response counts as a failure
    assert b.ejected("a", "m") and b.start_index(cfg.models["m"], "m") == 1

from authz.decide import throttled
from authz.throttle import FailureThrottle


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def test_blocks_after_max_failures_then_cools_down():
    clock = Clock()
    th = FailureThrottle(max_failures=3, window_s=60, block_s=10, clock=clock)
    for _ in range(2):
        th.failure("1.2.3.4")
    assert th.blocked("1.2.3.4") == 0
    th.failure("1.2.3.4")
    assert 9.9 < th.blocked("1.2.3.4") <= 10
    assert th.blocked("5.6.7.8") == 0  # other sources unaffected
    clock.t += 10.1
    assert th.blocked("1.2.3.4") == 0


def test_window_resets_old_failures():
    clock = Clock()
    th = FailureThrottle(max_failures=3, window_s=60, block_s=10, clock=clock)
    th.failure("a")
    th.failure("a")
    clock.t += 61
    th.failure("a")
    assert th.blocked("a") == 0


def test_bounded_memory():
    th = FailureThrottle(max_sources=10)
    for i in range(100):
        th.failure(f"10.0.0.{i}")
    assert len(th._state) == 10


def test_throttled_reply_in_the_right_format():
    d = throttled({":path": "/v1/messages"}, 2.5)
    assert d.status == 429 and d.headers["retry-after"] == "3" and d.body.startswith(b'{"type":"error"')
    d = throttled({":path": "/v1/chat/completions"}, 0.2)
    assert b'"auth_rate_limited"' in d.body and d.headers["retry-after"] == "1"

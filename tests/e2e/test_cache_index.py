"""The local index of the store's exact-cache entries (docs/cache.md, "The local key index") through
Envoy with two extproc processes sharing one Valkey: a new question is a miss without a store GET,
and an entry one process fills is a hit in the other (the store reported it)."""

from __future__ import annotations

import threading
import time

import openai
import pytest
from fault_helpers import metric_sum, metrics_text, sync_redis

pytestmark = pytest.mark.e2e

STACK_EXTRA = {
    "services": {"extproc_workers": 2},
    "models": {"cached": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}], "cache": {"exact": True}}},
    "defaults": {"guard": None},
}


def _ask(stack, text: str):
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0, timeout=20)
    return client.chat.completions.with_raw_response.create(model="cached", messages=[{"role": "user", "content": text}])


class CacheGets:
    """Counts the cache GETs the store receives (MONITOR, on its own connection and thread)."""

    def __init__(self, stack) -> None:
        self.count, self._stop = 0, threading.Event()
        self._redis = sync_redis(stack)
        self._monitor = self._redis.monitor()
        self._monitor.connection = self._redis.connection_pool.get_connection()
        self._monitor.connection.send_command("MONITOR")
        assert self._monitor.connection.read_response() in (b"OK", "OK")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                cmd = self._monitor.next_command()
            except Exception:
                return
            if cmd["command"].startswith("GET sgc:v1:"):
                self.count += 1

    def stop(self) -> int:
        self._stop.set()
        self._redis.set("sgc-monitor-wakeup", "1", px=100)  # one more command: the reader returns
        self._thread.join(5)
        self._monitor.connection.disconnect()
        self._redis.close()
        return self.count


def _entries(r) -> int:
    return sum(1 for k in r.scan_iter(match="sgc:v1:*", count=1000) if b"~probe:" not in k)


def test_a_miss_costs_no_get_and_one_processs_fill_is_a_hit_in_both(stack, fake_openai):
    r = sync_redis(stack)
    try:
        deadline = time.monotonic() + 10
        while metric_sum(metrics_text(stack), "sidegate_cache_index_synced") < 1:  # the lowest of the workers
            assert time.monotonic() < deadline, "the index was never trusted"
            time.sleep(0.1)
        before_entries = _entries(r)
        gets = CacheGets(stack)
        try:
            for i in range(10):  # new questions, spread over both processes by Envoy
                resp = _ask(stack, f"Index question {i}: what is the answer?")
                assert resp.http_response.status_code == 200 and resp.headers.get("x-sidegate-cache") != "hit-exact"
        finally:
            assert gets.stop() == 0  # ten misses, no cache GET
        deadline = time.monotonic() + 10
        while _entries(r) < before_entries + 10:
            assert time.monotonic() < deadline, "the fills never landed"
            time.sleep(0.05)
        time.sleep(0.1)
        calls = len(fake_openai.requests)
        for i in range(10):  # each filled by one process: a hit in whichever answers now
            for _ in range(2):
                assert _ask(stack, f"Index question {i}: what is the answer?").headers.get("x-sidegate-cache") == "hit-exact"
        assert len(fake_openai.requests) == calls  # no hit reached the provider
        # Both indexes stayed trusted throughout: a trusted index lacking a key answers "miss"
        # without asking, so each hit in the process that did not fill came from the store's report.
        text = metrics_text(stack)
        assert metric_sum(text, "sidegate_cache_index_synced") == 1
        assert metric_sum(text, "sidegate_cache_index_loads_total") == 2  # one read per process, at start
    finally:
        r.close()

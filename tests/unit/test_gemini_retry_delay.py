"""Google's 429 says when to retry in its body (`error.details[]` `google.rpc.RetryInfo`
`retryDelay: "9s"`), not in a `retry-after` header: the per-try stage reads it, so the breaker
honours it and every client gets `retry-after` as from the other providers."""

from __future__ import annotations

import orjson

from sidegate import config
from sidegate.core.tries import TryStage

BODY = orjson.dumps({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                               "status": "RESOURCE_EXHAUSTED", "details": [
                                   {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                                   {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "8.2s"}]}})  # fmt: skip


def _try(api: str = "openai"):
    cfg = config.parse(
        {
            "providers": {
                "gemini": {"api": "gemini", "base_url": "https://generativelanguage.googleapis.com"}
            },
            "models": {"m": {"routes": [{"provider": "gemini", "model": "gemini-2.0-flash"}]}},
        },
        env={},
    )
    t = TryStage(cfg).start_try({"api": api, "model": "m"}, "provider.gemini", 1)
    t.request_body(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
    return t


def test_a_google_retry_delay_becomes_retry_after() -> None:
    t = _try()
    t.response_headers(429, {":status": "429", "content-type": "application/json"})
    out = t.response_body(BODY)
    assert t.status == 429 and orjson.loads(out)["error"]["type"] == "rate_limit_error"
    assert t.retry_after_s == 8.2 and t.late_headers == {"retry-after": "9"}


def test_a_retry_after_header_wins_and_other_errors_have_none() -> None:
    t = _try()
    t.response_headers(429, {":status": "429", "retry-after": "3"})
    t.response_body(BODY)
    assert t.retry_after_s == 3.0 and not t.late_headers
    t = _try()
    t.response_headers(503, {":status": "503"})
    t.response_body(b'{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}')
    assert t.retry_after_s is None and not t.late_headers

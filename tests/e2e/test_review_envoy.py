"""Direct-lane edge cases of the router-level Lua (sidegate/render.py `_ERRORS_LUA`,
sidegate/render_stream.py), through a real Envoy."""

from __future__ import annotations

import pytest
from fault_helpers import body_for, post

pytestmark = pytest.mark.e2e
STACK_EXTRA = {
    "models": {"claude-direct": {"routes": [{"provider": "anthropic"}]}},
    "defaults": {"guard": None},
}


@pytest.mark.parametrize("status", [401, 200])
def test_direct_lane_answer_without_a_body_is_a_502_with_one(stack, fake_openai, status):
    """A bodyless 401 (our key refused) or 200 (not a valid answer) becomes the 502 in the client's
    format: its body is really sent (the content-length the Lua sets matches it)."""
    fake_openai.script([{"status": status, "empty": True}])
    r = post(stack, "openai", body_for("openai", "gpt-4o-mini", "hi"), timeout=5)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["message"]
    assert r.headers["x-sidegate-provider"] == "openai"  # the direct lane answered


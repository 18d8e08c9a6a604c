"""`POST /v1/responses` on each lane, on both fronts, through a real Envoy: the direct lane when the
provider takes the request as is (JSON and streams: Envoy reads the usage from the body or from
`response.completed`, the stream watch ends a cut stream with an error event), the full lane
(per-try gRPC) and the try lane (HTTP front, non-streaming) when the per-try stage is needed (an
alias, a translation, a stored answer); the quota reserved then trued up from the real usage."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from harness import OPENAI_PROVIDER_KEY, Stack
from responses_helpers import front_gateway, oai

pytestmark = pytest.mark.e2e

# Answers not kept (responses.store: false): a kept answer needs the per-try stage, so with the
# default (keep, as OpenAI does) only `store: false` requests go direct (tests/e2e/test_responses_store.py).
EXTRA = {"tenants": {"globex": {"quota": {"limits": {"tpm": 100000}}}}, "responses": {"store": False}}


gw = front_gateway(EXTRA)


def front(gw: Stack) -> str:
    return str(gw.cfg_data["services"]["front"])


class Lanes:
    """Which lane a provider's tries took, from Envoy's per-cluster request counters."""

    def __init__(self, gw: Stack, provider: str):
        self.gw, self.provider = gw, provider
        self.before = self.counts()

    def counts(self) -> dict[str, int]:
        names = {"full": f"cluster.provider.{self.provider}", "direct": f"cluster.provider.{self.provider}~direct",
                 "try": f"cluster.provider.{self.provider}~try"}  # fmt: skip
        return {lane: self.gw.stat(name + ".upstream_rq_total") or 0 for lane, name in names.items()}

    def taken(self) -> list[str]:
        now = self.counts()
        return [lane for lane in now for _ in range(now[lane] - self.before[lane])]


def test_passthrough_takes_the_direct_lane(gw: Stack, fake_openai) -> None:
    fake_openai.script([{"usage": {"prompt_tokens": 21, "completion_tokens": 4}}])
    lanes = Lanes(gw, "openai")
    raw = oai(gw).responses.with_raw_response.create(
        model="gpt-4o-mini", input="Say hi", max_output_tokens=50
    )
    assert "Say hi" in raw.parse().output_text and raw.headers["x-sidegate-provider"] == "openai"
    assert lanes.taken() == ["direct"]
    (rec,) = fake_openai.requests
    assert rec.path == "/v1/responses" and rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    assert rec.json == {"model": "gpt-4o-mini", "input": "Say hi", "max_output_tokens": 50}  # as sent
    led = gw.wait_ledger(lambda r: (r.input_tokens, r.output_tokens) == (21, 4))
    assert (led.api, led.provider, led.status) == ("responses", "openai", 200)


def test_passthrough_stream_takes_the_direct_lane(gw: Stack, fake_openai) -> None:
    fake_openai.script([{"usage": {"prompt_tokens": 23, "completion_tokens": 7}, "chunks": 4}])
    lanes = Lanes(gw, "openai")
    with oai(gw).responses.stream(model="gpt-4o-mini", input="Stream hi") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text and final.usage.output_tokens == 7
    assert lanes.taken() == ["direct"]
    # The stream watch read response.completed's usage and saw its terminal event.
    led = gw.wait_ledger(lambda r: (r.input_tokens, r.output_tokens) == (23, 7))
    assert led.stream and not led.aborted and led.api == "responses"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"truncate": 3}, "ended before the response was complete"),
        ({"bad_event": {"after": 3, "data": "not json"}}, "malformed stream event"),
    ],
)
def test_a_broken_direct_stream_ends_with_an_error_event(
    gw: Stack, fake_openai, fault: dict, message: str
) -> None:
    """The stream watch does in Envoy what the full lane's passthrough does: a cut stream, or one
    with an event that is no JSON object, ends with Responses' own error event."""
    fake_openai.script([fault])
    lanes = Lanes(gw, "openai")
    auth = {"authorization": f"Bearer {gw.keys['acme'].key}"}
    body = {"model": "gpt-4o-mini", "input": "Break me", "stream": True}
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:
        text = c.post("/v1/responses", headers=auth, json=body).text
    assert lanes.taken() == ["direct"]
    events = [e for e in text.split("\n\n") if e.strip()]
    assert "response.completed" not in text and len(events) == 4
    # `event: error`, numbered after the events relayed (as the full lane's).
    kind, data = events[-1].split("\n", 1)
    error = json.loads(data.removeprefix("data: "))
    assert kind == "event: error" and error["type"] == "error" and message in error["message"]
    assert (
        error["sequence_number"] == 3 == json.loads(events[-2].split("data: ", 1)[1])["sequence_number"] + 1
    )


def test_per_try_work_takes_the_try_or_the_full_lane(gw: Stack, fake_openai, fake_anthropic) -> None:
    per_try = "try" if front(gw) == "http" else "full"
    lanes = Lanes(gw, "openai")
    oai(gw).responses.create(model="gpt-4o", input="Alias")  # provider-side name: the body is rewritten
    assert fake_openai.requests[-1].json["model"] == "gpt-4o-2024-08-06"
    assert lanes.taken() == [per_try]
    lanes = Lanes(gw, "openai")
    with oai(gw).responses.stream(model="gpt-4o", input="Alias stream") as stream:
        assert stream.get_final_response().output_text
    assert lanes.taken() == ["full"]  # translated streams keep the gRPC per-try stage
    lanes = Lanes(gw, "anthropic")
    assert "Translated" in oai(gw).responses.create(model="claude-haiku", input="Translated").output_text
    assert lanes.taken() == [per_try] and fake_anthropic.requests[-1].path == "/v1/messages"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku"])
def test_quota_reserved_then_trued_up(gw: Stack, request: pytest.FixtureRequest, model: str) -> None:
    """The reservation (the input estimate + max_output_tokens) is replaced by the usage the
    provider reported (read by Envoy on the direct lane, by the per-try stage otherwise)."""
    fake = request.getfixturevalue("fake_openai" if model == "gpt-4o-mini" else "fake_anthropic")
    client = oai(gw, "globex")
    fake.script([{"usage": {"prompt_tokens": 30, "completion_tokens": 70}}])
    first = client.responses.with_raw_response.create(model=model, input="Count me", max_output_tokens=5000)
    assert first.parse().usage.total_tokens == 100
    reserved_left = int(first.headers["x-ratelimit-remaining-tokens"])
    deadline, left = time.monotonic() + 5, 0
    while time.monotonic() < deadline:
        fake.script([{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}])
        nxt = client.responses.with_raw_response.create(model=model, input="Again", max_output_tokens=16)
        left = int(nxt.headers["x-ratelimit-remaining-tokens"])
        if left > reserved_left + 4000:
            break
        time.sleep(0.1)
    assert left > reserved_left + 4000, (reserved_left, left)
    led = gw.wait_ledger(lambda r: r.tenant == "globex" and r.model == model and r.output_tokens == 70)
    assert (led.api, led.input_tokens) == ("responses", 30)

"""Kept Responses answers through a real Envoy on both fronts, with the official `openai` SDK:
`previous_response_id` continues a conversation (the provider receives the whole history, as
items, without the id), across a fallback from a failing OpenAI provider to an Anthropic one,
streamed and not; `client.responses.retrieve / delete / input_items.list`; another tenant's id is
a 404; `store: false` keeps nothing; the stored-response paths ask no provider and are no usage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import agents
import httpx
import openai
import pytest
from harness import Stack
from responses_helpers import FALLBACK_MODEL, WEATHER_TOOL, front_gateway, oai

pytestmark = pytest.mark.e2e

EXTRA: dict[str, Any] = {
    "models": {
        "fallback": FALLBACK_MODEL,
    },
}


gw = front_gateway(EXTRA)


def texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of Responses input items as a provider received them."""
    out = []
    for item in items:
        content = item.get("content")
        text = (
            content if isinstance(content, str) else "".join(part.get("text", "") for part in content or [])
        )
        out.append((item.get("role", item.get("type", "")), text))
    return out


def anthropic_texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for m in messages:
        content = m["content"]
        text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
        out.append((m["role"], text))
    return out


def retrieve(client: openai.OpenAI, response_id: str, timeout_s: float = 5.0) -> Any:
    """The kept answer, once its write (a task after the answer went out) has landed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.responses.retrieve(response_id)
        except openai.NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_previous_response_id_sends_the_whole_conversation(gw: Stack, fake_openai, stream: bool) -> None:
    client = oai(gw)
    first = client.responses.create(model="gpt-4o-mini", input="My name is Ada.", instructions="Be brief.")
    retrieve(client, first.id)
    if stream:
        with client.responses.stream(
            model="gpt-4o-mini", input="What is my name?", previous_response_id=first.id
        ) as s:
            second = s.get_final_response()
    else:
        second = client.responses.create(
            model="gpt-4o-mini", input="What is my name?", previous_response_id=first.id
        )
    sent = fake_openai.requests[-1].json
    assert "previous_response_id" not in sent and "instructions" not in sent  # instructions: not carried over
    assert texts(sent["input"]) == [("user", "My name is Ada."), ("assistant", first.output_text),
                                    ("user", "What is my name?")]  # fmt: skip
    retrieve(client, second.id)
    third = client.responses.create(model="gpt-4o-mini", input="Once more.", previous_response_id=second.id)
    assert len(fake_openai.requests[-1].json["input"]) == 5
    got = retrieve(client, third.id)
    assert (
        got.id == third.id and got.output_text == third.output_text and got.previous_response_id == second.id
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_conversation_survives_a_fallback_to_anthropic(
    gw: Stack, fake_openai, fake_anthropic, stream: bool
) -> None:
    client = oai(gw)
    first = client.responses.create(model="fallback", input="Remember the word: tangerine.")
    assert [r.path for r in fake_openai.requests] == ["/v1/responses"]
    retrieve(client, first.id)
    fake_openai.script([{"status": 503, "error": "overloaded"}])
    if stream:
        with client.responses.stream(
            model="fallback", input="Which word?", previous_response_id=first.id
        ) as s:
            second = s.get_final_response()
    else:
        second = client.responses.create(model="fallback", input="Which word?", previous_response_id=first.id)
    assert "Which word?" in second.output_text
    (to_anthropic,) = fake_anthropic.requests
    assert anthropic_texts(to_anthropic.json["messages"]) == [
        ("user", "Remember the word: tangerine."), ("assistant", first.output_text), ("user", "Which word?"),
    ]  # fmt: skip
    # The fallback's answer is the one kept: the next turn (back on OpenAI) has all of it.
    retrieve(client, second.id)
    client.responses.create(model="fallback", input="And now?", previous_response_id=second.id)
    assert texts(fake_openai.requests[-1].json["input"]) == [
        ("user", "Remember the word: tangerine."), ("assistant", first.output_text), ("user", "Which word?"),
        ("assistant", second.output_text), ("user", "And now?"),
    ]  # fmt: skip


def test_retrieve_list_input_items_and_delete(gw: Stack) -> None:
    client = oai(gw)
    items = [{"role": "user", "content": f"part {i}"} for i in range(3)]
    resp = client.responses.create(model="gpt-4o-mini", input=items)
    got = retrieve(client, resp.id)
    assert got.model_dump() == resp.model_dump()  # the answer as the client received it
    page = client.responses.input_items.list(resp.id, order="asc", limit=2)
    assert [i.content[0].text for i in page.data] == ["part 0", "part 1"] and page.has_more
    assert [i.content[0].text for i in client.responses.input_items.list(resp.id, order="asc")] == [
        "part 0", "part 1", "part 2",
    ]  # every page, through the SDK's cursor  # fmt: skip
    assert client.responses.input_items.list(resp.id).data[0].content[0].text == "part 2"  # desc by default
    assert client.responses.delete(resp.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(resp.id)


def test_another_tenants_id_is_a_404(gw: Stack, fake_openai) -> None:
    mine = oai(gw)
    resp = mine.responses.create(model="gpt-4o-mini", input="acme's secret")
    retrieve(mine, resp.id)
    theirs = oai(gw, "globex")
    for call in (lambda: theirs.responses.retrieve(resp.id), lambda: theirs.responses.delete(resp.id),
                 lambda: theirs.responses.input_items.list(resp.id)):  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            call()
    served = len(fake_openai.requests)
    with pytest.raises(openai.NotFoundError) as err:
        theirs.responses.create(model="gpt-4o-mini", input="and?", previous_response_id=resp.id)
    assert (
        err.value.body["param"] == "previous_response_id"
        and err.value.body["code"] == "previous_response_not_found"
    )
    assert len(fake_openai.requests) == served  # refused before any provider
    assert mine.responses.retrieve(resp.id).id == resp.id  # untouched for its owner


def test_store_false_keeps_nothing(gw: Stack, fake_openai) -> None:
    client = oai(gw)
    resp = client.responses.create(model="gpt-4o-mini", input="forget me", store=False)
    streamed = None
    with client.responses.stream(model="gpt-4o-mini", input="me too", store=False) as s:
        streamed = s.get_final_response()
    time.sleep(0.5)  # a write, were there one, would have landed
    for rid in (resp.id, streamed.id):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(rid)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="gpt-4o-mini", input="x", previous_response_id=rid)


def test_stored_paths_ask_no_provider_and_are_no_usage(gw: Stack, fake_openai, fake_anthropic) -> None:
    client = oai(gw)
    resp = client.responses.create(model="gpt-4o-mini", input="count me once")
    retrieve(client, resp.id)
    gw.wait_ledger(lambda r: r.model == "gpt-4o-mini" and r.status == 200)
    time.sleep(0.5)
    seen = (len(fake_openai.requests), len(fake_anthropic.requests))
    before = len(gw.ledger())
    auth = {"authorization": f"Bearer {gw.keys['acme'].key}"}
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:
        for _ in range(3):
            assert c.get(f"/v1/responses/{resp.id}", headers=auth).status_code == 200
            assert c.get(f"/v1/responses/{resp.id}/input_items", headers=auth).status_code == 200
        assert c.get(f"/v1/responses/{resp.id}").status_code == 401  # no key
        r = c.post(f"/v1/responses/{resp.id}", headers=auth, json={})
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
        assert c.get("/v1/responses/resp_nope", headers=auth).json()["error"]["type"] == "not_found_error"
        assert c.delete(f"/v1/responses/{resp.id}", headers=auth).json() == {
            "id": resp.id,
            "object": "response",
            "deleted": True,
        }
    time.sleep(1.0)  # ledger records are written in batches
    assert len(gw.ledger()) == before
    assert (len(fake_openai.requests), len(fake_anthropic.requests)) == seen


def test_a_kept_answer_takes_a_per_try_lane_and_store_false_goes_direct(gw: Stack, fake_openai) -> None:
    """Envoy alone cannot keep an answer: a request whose answer is kept takes the per-try stage
    (the try lane behind the HTTP front, the full lane otherwise); the same with `store: false`
    takes the direct lane, a continued one too (its body was rewritten by the gateway)."""

    def taken(before: dict[str, int]) -> list[str]:
        now = lanes()
        return [lane for lane in now for _ in range(now[lane] - before[lane])]

    def lanes() -> dict[str, int]:
        names = {"full": "cluster.provider.openai", "direct": "cluster.provider.openai~direct",
                 "try": "cluster.provider.openai~try"}  # fmt: skip
        return {lane: gw.stat(name + ".upstream_rq_total") or 0 for lane, name in names.items()}

    client = oai(gw)
    per_try = "try" if gw.cfg_data["services"]["front"] == "http" else "full"
    before = lanes()
    kept = client.responses.create(model="gpt-4o-mini", input="keep me")
    assert taken(before) == [per_try]
    retrieve(client, kept.id)
    before = lanes()
    client.responses.create(model="gpt-4o-mini", input="not me", store=False)
    assert taken(before) == ["direct"]
    before = lanes()
    client.responses.create(model="gpt-4o-mini", input="nor me", store=False, previous_response_id=kept.id)
    assert taken(before) == (
        ["direct"] if per_try == "full" else [per_try]
    )  # the HTTP front: each try prepends
    assert len(fake_openai.requests[-1].json["input"]) == 3


def test_a_tool_round_trip_continued_by_id_on_another_provider(
    gw: Stack, fake_openai, fake_anthropic
) -> None:
    """Turn 1 (OpenAI) calls a tool; turn 2 sends only the tool's result and the previous id, and
    lands on Anthropic (OpenAI fails): Anthropic receives the call and its result, paired."""
    client = oai(gw)
    fake_openai.script([{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]}])
    first = client.responses.create(model="fallback", input="Weather in Paris?", tools=[WEATHER_TOOL])
    (call,) = [item for item in first.output if item.type == "function_call"]
    retrieve(client, first.id)
    fake_openai.script([{"status": 503, "error": "overloaded"}])
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}
    second = client.responses.create(
        model="fallback", input=[result], previous_response_id=first.id, tools=[WEATHER_TOOL]
    )
    assert second.status == "completed" and second.output_text
    messages = fake_anthropic.requests[-1].json["messages"]
    tool_use = messages[-2]["content"][-1]
    tool_result = messages[-1]["content"][0]
    assert (
        tool_use["type"] == "tool_use"
        and tool_use["name"] == "get_weather"
        and tool_use["input"] == {"city": "Paris"}
    )
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == tool_use["id"]
    assert "sunny, 21 C" in str(tool_result["content"])


def test_the_agents_sdk_chains_its_turns_by_id(gw: Stack, fake_openai, fake_anthropic) -> None:
    """The OpenAI Agents SDK with `auto_previous_response_id` sends each model call only its new
    items and the previous answer's id: the tool loop, then a follow-up run after a fallback to
    Anthropic, each provider receiving the whole conversation."""
    cities: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        cities.append(city)
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys["acme"].key, max_retries=0)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_tracing_disabled(True)
    try:
        agent = agents.Agent(
            name="Weather", instructions="Use the tool.", tools=[get_weather], model="fallback"
        )
        fake_openai.script([{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]}])
        first = agents.Runner.run_sync(agent, "Weather in Paris?", auto_previous_response_id=True)
        assert cities == ["Paris"] and str(first.final_output)
        second_call = fake_openai.requests[1].json  # the tool's result, sent by id by the SDK
        assert "previous_response_id" not in second_call
        items = second_call["input"]
        assert items[0]["role"] == "user" and "Weather in Paris?" in str(items[0]["content"])
        assert [i.get("type") for i in items[-2:]] == ["function_call", "function_call_output"]
        retrieve(openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys["acme"].key, max_retries=0),
                 str(first.last_response_id))  # fmt: skip
        fake_openai.script([{"status": 503, "error": "overloaded"}])
        follow = agents.Runner.run_sync(agent, "And tomorrow?", previous_response_id=first.last_response_id)
        assert str(follow.final_output)
        (to_anthropic,) = fake_anthropic.requests
        sent = to_anthropic.json["messages"]
        assert sent[0]["role"] == "user" and "Weather in Paris?" in str(sent[0]["content"])
        assert any(b.get("type") == "tool_result" for m in sent for b in m["content"] if isinstance(b, dict))
        assert "And tomorrow?" in str(sent[-1]["content"])
    finally:
        asyncio.run(client.close())


def test_the_guard_redacts_the_whole_conversation_and_keeps_what_the_client_wrote(
    gw: Stack, fake_openai
) -> None:
    """The feature runs before the guard: the provider sees placeholders for the earlier turns'
    PII too, while the kept conversation is the client's own words (what it listed and sent)."""
    client = oai(gw)
    first = client.responses.create(model="gpt-4o-mini", input="Write to ada.lovelace@example.com please.")
    assert "ada.lovelace@example.com" not in repr(fake_openai.requests[-1].json)
    retrieve(client, first.id)
    listed = client.responses.input_items.list(first.id)
    assert listed.data[0].content[0].text == "Write to ada.lovelace@example.com please."
    client.responses.create(model="gpt-4o-mini", input="And again.", previous_response_id=first.id)
    sent = fake_openai.requests[-1].json
    assert "ada.lovelace@example.com" not in repr(sent) and "<EMAIL_1>" in texts(sent["input"])[0][1]

"""Scope and exact keys: everything that can change the answer changes the key; transport fields don't."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sidegate.errors import Api
from sidegate.features.cache import CachePolicy, CacheRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_helpers import anthropic_body, openai_body, req

BASE = req()


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 0.2},
        {"top_p": 0.5},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"tool_choice": "required"},
        {"response_format": {"type": "json_object"}},
        {"seed": 7},
        {"reasoning_effort": "high"},
        {"max_tokens": 10},
        {"max_completion_tokens": 10},
        {"stop": ["\n"]},
        {"n": 2},
        {"logit_bias": {"50256": -100}},
        {"parallel_tool_calls": False},
    ],
)
def test_answer_changing_params_change_scope_and_key(params):
    other = req(**params)
    assert other.scope != BASE.scope
    assert other.exact_key != BASE.exact_key


def test_system_prompt_tenant_model_api_change_scope():
    body = openai_body()
    body["messages"][0]["content"] = "You are verbose."
    assert req(body=body).scope != BASE.scope
    assert req(tenant="globex").scope != BASE.scope
    assert req(model="gpt-4o").scope != BASE.scope
    same_text = CacheRequest.from_body(Api.ANTHROPIC, "acme", "gpt-4o-mini", openai_body(), {})
    assert same_text.scope != BASE.scope


def test_earlier_turns_change_scope_but_last_question_does_not():
    body = openai_body()
    body["messages"][1:1] = [
        {"role": "user", "content": "Let's talk about Texas."},
        {"role": "assistant", "content": "Sure."},
    ]
    multi = req(body=body)
    assert multi.scope != BASE.scope
    assert multi.query_text == BASE.query_text  # same last question, different conversation
    other_q = req(question="Tell me France's capital city.")
    assert other_q.scope == BASE.scope
    assert other_q.exact_key != BASE.exact_key


@pytest.mark.parametrize(
    "params",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "end-user-42"},
        {"metadata": {"trace": "x"}},
        {"store": True},
        {"service_tier": "auto"},
        {"prompt_cache_key": "k"},
    ],
)
def test_transport_and_tracking_fields_do_not_change_key(params):
    other = req(**params)
    assert other.scope == BASE.scope
    assert other.exact_key == BASE.exact_key


def test_absent_temperature_is_one_and_int_equals_float():
    assert req(temperature=1).exact_key == BASE.exact_key
    assert req(temperature=1.0).exact_key == BASE.exact_key
    assert BASE.temperature == 1.0
    assert req(temperature=0).temperature == 0.0


def test_key_order_and_whitespace_in_json_do_not_matter():
    a = CacheRequest.from_body(
        Api.OPENAI, "t", "m", {"messages": [{"role": "user", "content": "hi"}], "seed": 1}
    )
    b = CacheRequest.from_body(
        Api.OPENAI, "t", "m", {"seed": 1, "messages": [{"content": "hi", "role": "user"}]}
    )
    assert a.exact_key == b.exact_key


def test_anthropic_thinking_system_and_cache_control():
    base = req(Api.ANTHROPIC)
    assert req(Api.ANTHROPIC, thinking={"type": "enabled", "budget_tokens": 1024}).scope != base.scope
    assert req(Api.ANTHROPIC, system="Be verbose.").scope != base.scope
    assert req(Api.ANTHROPIC, metadata={"user_id": "u"}).exact_key == base.exact_key
    # Prompt-caching markers do not change the answer.
    body = anthropic_body()
    body["system"] = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    plain = anthropic_body()
    plain["system"] = [{"type": "text", "text": "You are terse."}]
    assert req(Api.ANTHROPIC, body=body).exact_key == req(Api.ANTHROPIC, body=plain).exact_key


def test_query_text_only_for_a_text_last_user_message():
    assert BASE.query_text == "What is the capital of France?"
    parts = openai_body()
    parts["messages"][-1]["content"] = [{"type": "text", "text": "What is"}, {"type": "text", "text": "it?"}]
    assert req(body=parts).query_text == "What is it?"  # whitespace collapsed
    image = openai_body()
    image["messages"][-1]["content"] = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    assert req(body=image).query_text is None
    tool = openai_body()
    tool["messages"].append({"role": "tool", "tool_call_id": "c1", "content": "42"})
    assert req(body=tool).query_text is None
    anth_tool = anthropic_body()
    anth_tool["messages"][-1]["content"] = [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]
    assert req(Api.ANTHROPIC, body=anth_tool).query_text is None
    assert req(question="  lots   of\n space ").query_text == "lots of space"


def test_directives_and_threshold():
    policy = CachePolicy(exact=True, semantic=True, threshold=0.9)
    assert BASE.lookup_allowed and BASE.fill_allowed
    nc = req(headers={"Cache-Control": "no-cache"})
    assert not nc.lookup_allowed and nc.fill_allowed
    bp = req(headers={"x-sidegate-cache": "bypass"})
    assert not bp.lookup_allowed and bp.fill_allowed
    ns = req(headers={"cache-control": "no-store"})
    assert not ns.lookup_allowed and not ns.fill_allowed
    assert req(headers={"x-sidegate-cache-threshold": "0.99"}).threshold(policy) == 0.99
    assert req(headers={"x-sidegate-cache-threshold": "0.5"}).threshold(policy) == 0.9  # never lowered
    assert req(headers={"x-sidegate-cache-threshold": "junk"}).threshold(policy) == 0.9
    assert req(headers={"x-sidegate-cache-threshold": "7"}).threshold(policy) == 0.9


def test_temperature_gate_and_stream_flags():
    cold = CachePolicy(exact=True, max_temperature=0.5)
    assert not BASE.allowed_by(cold)  # absent temperature counts as 1.0
    assert req(temperature=0.3).allowed_by(cold)
    assert not req(temperature=0.3).allowed_by(CachePolicy())  # nothing enabled
    s = req(stream=True, stream_options={"include_usage": True})
    assert s.stream and s.include_usage
    assert not req(stream_options={"include_usage": True}).include_usage

"""Shared pieces of the cache tests: a real Valkey, sample requests and responses, one loaded embedder."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

from sidegate.errors import Api
from sidegate.features.cache import CacheRequest, Embedder
from sidegate.features.cache.embedder import DEFAULT_MODEL
from sidegate.ports import free_port, wait_for_port
from sidegate.store.valkey import valkey_binary


@contextlib.contextmanager
def valkey_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throwaway valkey-server on a free loopback port: yields (url, process)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sidegate-cache-valkey-") as d:
        cmd = [
            valkey_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        proc = subprocess.Popen([*cmd, "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", port, timeout_s=10, proc=proc)
            yield f"redis://127.0.0.1:{port}/0", proc
        finally:
            proc.kill()
            proc.wait(timeout=5)


@functools.cache
def shared_embedder(model: str = DEFAULT_MODEL) -> Embedder:
    """The real model (the default one unless named), loaded once per test process."""
    e = Embedder(threads=1, model=model)
    e.load()
    return e


def openai_body(question: str = "What is the capital of France?", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": question},
        ],
    }
    body.update(params)
    return body


def anthropic_body(question: str = "What is the capital of France?", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 256,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": question}],
    }
    body.update(params)
    return body


def openai_response(text: str = "Paris.", finish: str = "stop", **extra: Any) -> dict[str, Any]:
    resp: dict[str, Any] = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
    }
    resp.update(extra)
    return resp


def openai_tool_response() -> dict[str, Any]:
    resp = openai_response(finish="tool_calls")
    resp["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"q":"Paris"}'},
            },
        ],
    }
    return resp


def anthropic_response(text: str = "Paris.", stop: str = "end_turn", **extra: Any) -> dict[str, Any]:
    resp: dict[str, Any] = {
        "id": "msg_abc123",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 3},
    }
    resp.update(extra)
    return resp


def anthropic_tool_response() -> dict[str, Any]:
    resp = anthropic_response(stop="tool_use")
    resp["content"] = [
        {"type": "thinking", "thinking": "Need the weather.", "signature": "sig=="},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris", "days": [1, 2]}},
    ]
    return resp


def req(
    api: Api = Api.OPENAI,
    tenant: str = "acme",
    model: str | None = None,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    question: str | None = None,
    **params: Any,
) -> CacheRequest:
    """A CacheRequest for a sample body (question/params go into the default body)."""  # fmt: skip
    if body is None:
        make = anthropic_body if api is Api.ANTHROPIC else openai_body
        body = make(question, **params) if question is not None else make(**params)
    return CacheRequest.from_body(api, tenant, model or body["model"], body, headers or {})

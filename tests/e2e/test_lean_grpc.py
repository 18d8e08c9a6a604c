"""The ext_proc streams on the lean gRPC server (`services.grpc_server: lean`, extproc/h2c.py)
through a real Envoy: the mesh shape (gateway and per-try streams on every request), same-schema,
translated and streamed answers, the streams counted on the lean cluster and not on grpc.aio's,
and a call without the internal token refused there."""

from __future__ import annotations

import asyncio

import anthropic
import grpc
import openai
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e
STACK_EXTRA = {
    "services": {"auth": "inline", "front": "ext_proc", "direct_lane": False, "grpc_server": "lean"}
}
MSG = [{"role": "user", "content": "hi"}]
LEAN_RQ = "cluster.sidegate_extproc_lean.upstream_rq_total"


def test_answers_go_through_the_lean_server(stack, fake_openai, fake_anthropic):
    before = stack.stat(LEAN_RQ) or 0
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MSG).choices[0].message.content
    translated = client.chat.completions.create(model="claude-haiku", messages=MSG)
    assert translated.object == "chat.completion" and translated.choices[0].message.content
    chunks = list(client.chat.completions.create(model="claude-haiku", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # one gateway and one per-try stream per request, every one on the lean cluster
    assert (stack.stat(LEAN_RQ) or 0) - before == 6
    messages = anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0)
    assert messages.messages.create(model="claude-haiku", max_tokens=16, messages=MSG).content[0].text


def test_a_refusal_comes_back_in_the_clients_format(stack):
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)


def test_a_call_without_the_internal_token_is_unauthenticated(stack):
    assert stack.sup is not None
    port = stack.sup.cfg.services.lean_port

    async def call() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stream = pb_grpc.ExternalProcessorStub(ch).Process(metadata=(("x-sidegate-phase", "upstream"),))
            try:  # (no request message: a write racing the refusal can end the call INTERNAL client-side)
                await stream.done_writing()
                await stream.read()
            except grpc.aio.AioRpcError:
                pass
            return await stream.code()

    assert asyncio.run(call()) == grpc.StatusCode.UNAUTHENTICATED

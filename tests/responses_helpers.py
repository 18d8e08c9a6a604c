"""What the e2e modules of the Responses API share: the stack fixture (one per front service), the
SDK client and the provider kinds they configure beside the default OpenAI and Anthropic ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from harness import FRONT_SERVICES, Stack, front_stack

FALLBACK_MODEL: dict[str, Any] = {
    "routes": [{"provider": "openai"}, {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]
}
"""A model served by the OpenAI provider first and by Anthropic when that try fails (a module's
stack config, copied by ``front_stack``)."""

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}
"""The Responses function tool the tool-call tests ask for."""


def local_chat_provider() -> dict[str, Any]:
    """The fake OpenAI reached as an OpenAI-shaped server without the Responses API (vLLM, Ollama...):
    a Responses client's requests are translated to chat completions. A new dict each call: the
    harness writes the fake's URL into the provider configs it is given."""
    return {"api": "openai", "base_url": "FAKE_OPENAI", "api_key_env": "E2E_OPENAI_KEY", "responses": False}


def front_gateway(extra: dict[str, Any]) -> Callable[..., Iterator[Stack]]:
    """A module's ``gw`` fixture: one stack with ``extra`` in its config per front service, shared by
    the module's tests (``gw = front_gateway(EXTRA)``)."""

    @pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
    def gw(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
        yield from front_stack(
            request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, extra
        )

    return gw


def oai(gw: Stack, who: str = "acme") -> openai.OpenAI:
    """The official SDK's client on the gateway, with ``who``'s key and no retries."""
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys[who].key, max_retries=0)

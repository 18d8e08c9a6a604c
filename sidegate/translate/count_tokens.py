"""Token counting (`POST /v1/messages/count_tokens`, Anthropic's shape): the request's checks and the
same-schema pair for an Anthropic provider.

The body is a Messages request without the generation knobs (model, messages, system, tools,
tool_choice, thinking...). It goes through as it is, model renamed; the answer, `{"input_tokens": N}`,
comes back as the provider wrote it. A count spends no tokens: the pair reads no usage.
"""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api, GatewayError
from sidegate.translate.anthropic_anthropic import AnthropicAnthropicStream
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.common import dumps, passthrough_error, provider_object

__all__ = ["COUNT_TOKENS_UPSTREAM_PATH", "AnthropicCountTokens", "check_count_tokens_request"]

COUNT_TOKENS_UPSTREAM_PATH = "/v1/messages/count_tokens"
_ROLES = ("user", "assistant")


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param)


def check_count_tokens_request(body: dict[str, Any]) -> None:
    """The checks Anthropic makes first, in its wording (`field: reason`), so a count the gateway
    estimates is refused exactly where Anthropic would refuse it."""
    messages = body.get("messages")
    if messages is None:
        raise _bad("messages: Field required", "messages")
    if not isinstance(messages, list):
        raise _bad("messages: Input should be a valid list", "messages")
    if not messages:
        raise _bad("messages: at least one message is required", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(f"messages.{i}: Input should be a valid dictionary", f"messages.{i}")
        if m.get("role") not in _ROLES:
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'", f"messages.{i}.role")
        if not isinstance(m.get("content"), str | list):
            raise _bad(f"messages.{i}.content: Field required", f"messages.{i}.content")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _bad("system: Input should be a valid string or a list of text blocks", "system")
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise _bad("tools: Input should be a valid list of tool definitions", "tools")
    for name in ("thinking", "tool_choice"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _bad(f"{name}: Input should be a valid dictionary", name)
    if "max_tokens" in body:  # a count is no generation: Anthropic refuses it too
        raise _bad("max_tokens: Extra inputs are not permitted", "max_tokens")


class AnthropicCountTokens:
    """Pair: a count_tokens client -> an Anthropic provider (same schema, model renamed)."""

    inbound = Api.ANTHROPIC
    upstream = Api.ANTHROPIC

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        out = body if body.get("model") == model else {**body, "model": model}
        if opts.anthropic_body_version is not None:  # Anthropic on Vertex AI: the version in the body
            return ProviderRequest(COUNT_TOKENS_UPSTREAM_PATH, dumps({**out, "anthropic_version": opts.anthropic_body_version}))
        return ProviderRequest(
            COUNT_TOKENS_UPSTREAM_PATH, dumps(out), {"anthropic-version": opts.anthropic_version}
        )

    def response(self, body: bytes, *, model: str = "") -> tuple[bytes, Usage | None]:
        provider_object(body)  # only checked: the count goes back to the client as it came
        return body, None

    def stream(self, *, client_wants_usage: bool, model: str = "") -> AnthropicAnthropicStream:
        """A count is never streamed; a provider that streams anyway is relayed event by event."""
        return AnthropicAnthropicStream()

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return passthrough_error(Api.ANTHROPIC, status, body)

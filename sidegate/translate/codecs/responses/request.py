"""OpenAI Responses requests <-> the canonical form: a Responses client's body decoded (client
side) and a form request encoded as a Responses body (provider side, ``POST /v1/responses``).

The decoder runs only when the provider speaks another API (same-API routes are the passthrough
in ``responses_responses.py``), so everything that needs OpenAI's own server (built-in tools,
stored state, prompts, background runs) is refused here with a 400 naming the parameter; what
only steers OpenAI's server is dropped by the rules in ``_DROPPED`` (docs/translation.md,
"Responses API"); everything else is mapped. Unknown parameters are refused.
"""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api
from sidegate.translate.base import ProviderRequest, TranslateOptions
from sidegate.translate.codecs.form import Message, Request, Tool, ToolChoice
from sidegate.translate.codecs.responses.items import decode_input, encode_input
from sidegate.translate.codecs.util import check_sampling
from sidegate.translate.common import bad_param, dumps, is_int, need_str

# Parameters that only steer OpenAI's own server or the answer's envelope: accepted, not forwarded.
_DROPPED = frozenset(
    {
        "metadata",  # echoed by the gateway's answer; no provider behind a translation stores it
        "store",  # the gateway keeps the responses it served itself (GET /v1/responses/{id})
        "stream_options",  # only include_obfuscation (padding of stream events)
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "max_tool_calls",  # caps built-in tool calls, which are refused anyway
        "truncation",  # "auto" truncates an overflowing context: the provider answers its own error
        "include",  # extra output fields; logprobs (the one that needs the model) is checked below
        "parallel_tool_calls",  # mapped when false (below); true is every provider's default
    }
)
# Parameters accepted only at the value that changes nothing.
_NOOP_VALUES: dict[str, tuple[Any, ...]] = {
    "top_logprobs": (None, 0),
    "background": (None, False),
    "service_tier": (None, "auto", "default"),
    "context_management": (None, []),
    "moderation": (None,),
}
# Parameters that need OpenAI's server-side state: the gateway expands previous_response_id before
# translation, so reaching a codec means it could not.
_SERVER_STATE = {
    "previous_response_id": "previous_response_id needs the stored response; it cannot reach a provider "
    "of another API.",
    "conversation": "conversation objects live on OpenAI's server; send the input items instead.",
    "prompt": "prompt templates live on OpenAI's server; send the instructions and input instead.",
}
_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "user",
        "safety_identifier",
        "stream",
    }
)


def check_extras(extras: dict[str, Any]) -> None:
    """The decoder already refused what cannot go to another API: ``extras`` holds only the
    dropped parameters, kept by name for a same-API encoder."""


def _check_params(body: dict[str, Any]) -> dict[str, Any]:
    """Refuse what must be refused; return the dropped parameters (the form's ``extras``)."""
    extras: dict[str, Any] = {}
    for key, value in body.items():
        if key in _HANDLED:
            continue
        if key in _DROPPED:
            extras[key] = value
            continue
        if key in _SERVER_STATE:
            if value is not None:
                raise bad_param(key, _SERVER_STATE[key])
            continue
        allowed = _NOOP_VALUES.get(key)
        if allowed is None:
            raise bad_param(key, f"Parameter {key!r} is not supported for this model.")
        if value not in allowed:
            raise bad_param(key, f"Parameter {key!r} is not supported for this model (only its default is).")
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list):
            raise bad_param("include", "include must be a list.")
        if "message.output_text.logprobs" in include:
            raise bad_param("include", "logprobs are not supported for this model.")
    return extras


def _tools(tools: Any) -> list[Tool]:
    if not isinstance(tools, list):
        raise bad_param("tools", "tools must be a list.")
    out: list[Tool] = []
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise bad_param(
                "tools",
                f"Tool type {kind!r} is a built-in tool that only OpenAI's servers run; this model "
                "supports function tools only.",
            )
        name = need_str(tool.get("name"), "tools", "function tool name")
        desc = need_str(tool["description"], "tools", "tool description") if tool.get("description") else None
        params = tool.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise bad_param("tools", "function tool parameters must be a JSON Schema object.")
        out.append(
            Tool(name, desc, params or {"type": "object", "properties": {}}, tool.get("strict") is True)
        )
    return out


def _tool_choice(choice: Any) -> ToolChoice:
    if choice == "auto":
        return ToolChoice("auto")
    if choice == "none":
        return ToolChoice("none")
    if choice == "required":
        return ToolChoice("any")
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):  # type: ignore[union-attr]
        return ToolChoice("tool", choice["name"])  # type: ignore[index]
    raise bad_param("tool_choice", f"tool_choice {kind or choice!r} is not supported for this model.")


def _text_format(text: Any, req: Request) -> None:
    if not isinstance(text, dict):
        raise bad_param("text", "text must be an object.")
    verbosity = text.get("verbosity")
    if verbosity not in (None, "medium"):
        raise bad_param("text", "text.verbosity is not supported for this model (only 'medium' is).")
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return
    if kind == "json_schema":
        schema = fmt.get("schema")  # type: ignore[union-attr]
        if not isinstance(schema, dict):
            raise bad_param("text", "text.format json_schema needs a schema object.")
        req.response_schema = schema
        return
    if kind == "json_object":
        raise bad_param("text", "text.format json_object has no equivalent for this model; use json_schema.")
    raise bad_param("text", f"text.format type {kind!r} is not supported.")


def _reasoning(reasoning: Any, req: Request) -> None:
    """``effort`` becomes the form's effort (Anthropic: a thinking budget, chat: reasoning_effort);
    ``summary`` only asks OpenAI's server for summaries of its hidden reasoning: dropped (the
    reasoning a provider returns comes back whole, as reasoning text)."""
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise bad_param("reasoning", "reasoning must be an object.")
    effort = reasoning.get("effort")
    if effort is not None and effort != "none":
        req.reasoning_effort = need_str(effort, "reasoning", "reasoning.effort")


def decode_request(body: dict[str, Any]) -> Request:
    """Responses client body -> Request (every refusal happens here, whatever the provider)."""
    extras = _check_params(body)
    messages: list[Message] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append(Message("system", need_str(instructions, "instructions", "instructions")))
    messages.extend(decode_input(body.get("input")))
    req = Request(Api.RESPONSES, messages, check_extras, extras=extras)
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
        raise bad_param("max_output_tokens", "max_output_tokens must be a positive integer.")
    req.max_tokens, req.max_tokens_param = max_tokens, "max_output_tokens"
    sampling: dict[str, Any] = {}
    check_sampling({"temperature": body.get("temperature"), "top_p": body.get("top_p")}, sampling)
    req.temperature, req.top_p = sampling.get("temperature"), sampling.get("top_p")
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools:
        req.tools = _tools(tools)
        no_parallel = body.get("parallel_tool_calls") is False
        if choice is not None:
            req.tool_choice = _tool_choice(choice)
            req.tool_choice.disable_parallel = no_parallel
        elif no_parallel:
            req.tool_choice = ToolChoice("auto", explicit=False, disable_parallel=True)
    elif choice not in (None, "none", "auto"):
        raise bad_param("tool_choice", "tool_choice requires tools.")
    _reasoning(body.get("reasoning"), req)
    if body.get("text") is not None:
        _text_format(body["text"], req)
    user = body.get("safety_identifier") or body.get("user")
    if user:
        req.user = need_str(user, "user", "user")
    req.stream = bool(body.get("stream"))
    return req


# ------------------------------------------------------------------------------- request encode


def _effort(req: Request, opts: TranslateOptions) -> str | None:
    """The form's effort, or an Anthropic thinking budget as the smallest effort that covers it."""
    if req.reasoning_effort:
        return req.reasoning_effort
    if req.thinking_budget is None:
        return None
    budgets = opts.reasoning_budgets
    if not budgets:
        raise bad_param("thinking", "thinking is not enabled on this route.")
    fitting = [(b, e) for e, b in budgets.items() if b >= req.thinking_budget]
    return min(fitting)[1] if fitting else max((b, e) for e, b in budgets.items())[1]


def encode_request(req: Request, model: str, opts: TranslateOptions) -> ProviderRequest:
    """Request -> a Responses body for a provider reached at ``/v1/responses``. ``store: false``:
    the provider keeps nothing (the gateway serves the conversation state itself)."""
    if req.source is Api.RESPONSES:
        out: dict[str, Any] = {"model": model, **req.extras}
    else:
        req.check_extras(req.extras)
        out = {"model": model}
    out["input"] = encode_input(req.messages)
    if req.max_tokens is not None:
        out["max_output_tokens"] = req.max_tokens
    if req.temperature is not None:
        out["temperature"] = req.temperature
    if req.top_p is not None:
        out["top_p"] = req.top_p
    if req.top_k is not None:
        raise bad_param("top_k", "top_k is not supported by this model's API.")
    if req.stop:
        param = "stop_sequences" if req.source is Api.ANTHROPIC else "stop"
        raise bad_param(param, "stop sequences are not supported by this model's API.")
    if req.tools:
        out["tools"] = [
            {
                "type": "function",
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "parameters": t.schema or {"type": "object", "properties": {}},
                "strict": t.strict,
            }
            for t in req.tools
        ]
        tc = req.tool_choice
        if tc is not None and tc.explicit:
            out["tool_choice"] = (
                {"type": "function", "name": tc.name}
                if tc.kind == "tool"
                else {"any": "required"}.get(tc.kind, tc.kind)
            )
        if tc is not None and tc.disable_parallel:
            out["parallel_tool_calls"] = False
    effort = _effort(req, opts)
    if effort:
        out["reasoning"] = {"effort": effort}
    if req.response_schema is not None:
        out["text"] = {
            "format": {"type": "json_schema", "name": "output", "schema": req.response_schema, "strict": True}
        }
    if req.user:
        out["safety_identifier"] = req.user
    if req.source is not Api.RESPONSES:
        out["store"] = False
    if req.stream:
        out["stream"] = True
    return ProviderRequest("/v1/responses", dumps(out), {})

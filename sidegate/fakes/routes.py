"""Which fake endpoint a request reaches, whether it may, and the checks the real APIs make first."""

from __future__ import annotations

from typing import Any

#: OpenAI's Responses API, and Azure's (its v1 API and the older preview path).
RESPONSES_PATHS = ("/v1/responses", "/openai/v1/responses", "/openai/responses")


def route(method: str, path: str) -> str | None:
    """The endpoint's name (``models``, ``chat``, ``azure_chat``, ``messages``, ``count_tokens``,
    ``embeddings``, ``responses``), or None."""
    if method == "GET" and path == "/v1/models":
        return "models"
    if method != "POST":
        return None
    if path == "/v1/chat/completions":
        return "chat"
    if path == "/v1/messages":
        return "messages"
    if path == "/v1/messages/count_tokens":
        return "count_tokens"
    if path == "/v1/embeddings":
        return "embeddings"
    if path in RESPONSES_PATHS:
        return "responses"
    if path.startswith("/openai/deployments/"):
        parts = path.split("/")
        if len(parts) == 6 and parts[4] == "chat" and parts[5] == "completions":
            return "azure_chat"
        if len(parts) == 5 and parts[4] == "embeddings":
            return "embeddings"
    return None


def authorized(api_key: str, hdrs: dict[str, str]) -> bool:
    """The key in any of the three places the real providers read it from."""
    return (
        hdrs.get("authorization") == f"Bearer {api_key}"
        or hdrs.get("x-api-key") == api_key
        or hdrs.get("api-key") == api_key
    )


def wants_stream(body: Any) -> bool:
    return isinstance(body, dict) and bool(body.get("stream"))


def validate(route: str, body: dict[str, Any]) -> str | None:
    """The few checks the real APIs make that clients most often trip over."""
    if route in ("chat", "azure_chat", "messages") and not isinstance(body.get("messages"), list):
        return (
            "messages: Field required" if route == "messages" else "Missing required parameter: 'messages'."
        )
    if route in ("chat", "messages", "embeddings") and not isinstance(body.get("model"), str):
        return "model: Field required" if route == "messages" else "Missing required parameter: 'model'."
    if route == "messages" and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if route == "embeddings" and body.get("input") in (None, "", []):
        return "'input' is a required property"
    return None

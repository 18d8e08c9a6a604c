"""The `responses` section: how the gateway keeps the Responses API answers it served, so that
`previous_response_id` continues a conversation on any provider and `GET /v1/responses/{id}` works."""

from __future__ import annotations

from pydantic import Field

from sidegate.config.base import StrictModel

DAY_S = 86400


class ResponsesConfig(StrictModel):
    store: bool = True
    """Keep every Responses answer the client did not send with `store: false` (OpenAI's default is
    to keep), and serve `previous_response_id` and `GET|DELETE /v1/responses/{id}` from the store.
    Off (or no store): `previous_response_id` goes to the provider as sent, and those paths are 404."""
    ttl_s: int = Field(30 * DAY_S, ge=60, le=365 * DAY_S)
    """How long a kept answer (with the conversation before it) lives in the store: 30 days by
    default, as OpenAI keeps stored responses."""
    max_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """The largest conversation kept (input items + the answer, as stored JSON); a larger one is
    served but not kept, so a later `previous_response_id` naming it is a 404. Also bounds what a
    try holds of its answer to keep it."""
    read_timeout_ms: float = Field(1000.0, gt=0.0, le=30_000.0)
    """Bound on reading a kept answer on the request path; past it the request is a 503."""

"""What crosses the gateway in headers: the allow-lists of client request headers a provider may
receive and of provider response headers a client may see.

Both sides apply the same lists: the bootstrap renders them as Envoy `header_mutation` regexes for
the direct and try lanes' provider clusters (sidegate/bootstrap/hygiene.py), and the full lane's
per-try stage applies them itself (:class:`Allowed`, sidegate/core/tries.py). A pattern is
a name (`x`, exact) or a prefix (`x*`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sidegate.config import ProviderConfig
from sidegate.errors import Api

REQUEST_HEADERS_FORWARDED = ("content-type", "content-length", "accept", "idempotency-key", "user-agent", "x-request-id")
"""Client request headers every provider receives (plus the pseudo-headers and what the gateway
sets itself: credential, `:authority`, `:path`, the provider's static `headers`). `user-agent` and
`x-request-id` (the gateway's request id, for support tickets) pass because the access log reads
them from the same header map the upstream filters change. Not forwarded: credentials, cookies,
proxy and forwarding headers (`proxy-*`, `x-forwarded-*`, `forwarded`), `x-goog-api-key`,
`x-sidegate-*`, `x-envoy-*`, `accept-encoding` (a compressed answer could not be metered or
translated), SDK telemetry (`x-stainless-*`) and billing selectors (`openai-organization`,
`openai-project`) unless a provider's `forward_client_headers` lists them."""
REQUEST_HEADERS_BY_API = {
    Api.GEMINI: (),  # versioned by its paths (/v1beta)
    Api.OPENAI: ("openai-beta",), Api.RESPONSES: ("openai-beta",), Api.ANTHROPIC: ("anthropic-version", "anthropic-beta"),
    Api.BEDROCK: (),  # versioned by its paths; no client speaks it
}  # fmt: skip
"""Versioning headers of the provider's own API (the per-try stage sets or removes them per try)."""
RESPONSE_HEADERS_FORWARDED = (
    "content-type", "content-length", "content-encoding", "retry-after", "retry-after-ms",
    "x-request-id", "request-id", "openai-processing-ms", "openai-version",
    "x-ratelimit-*", "anthropic-ratelimit-*",
)  # fmt: skip
"""Provider response headers a client may see: framing, retry hints, the provider's request id
(for support tickets), its documented rate-limit headers (`x-ratelimit-*` are replaced by the
gateway's own when it sets them). Everything else (e.g. `openai-organization`,
`anthropic-organization-id`, `set-cookie`, an echoed `authorization`, forged `x-sidegate-*`) is
removed before any gateway filter sees the response."""
_PSEUDO = ":*"


def request_allowed(p: ProviderConfig) -> tuple[str, ...]:
    """The client headers this provider may receive."""
    return (_PSEUDO, *REQUEST_HEADERS_FORWARDED, *REQUEST_HEADERS_BY_API[p.api], *p.forward_client_headers)


RESPONSE_ALLOWED = (_PSEUDO, *RESPONSE_HEADERS_FORWARDED)


def allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """Is `name` on an allow-list (`x` exact, `x*` prefix)? (The rendered regexes' reference.)"""
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


class Allowed:
    """An allow-list as the per-try stage applies it (full lane): the names it refuses."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, patterns: tuple[str, ...]):
        self.exact = frozenset(h for h in patterns if not h.endswith("*"))
        self.prefixes = tuple(h[:-1] for h in patterns if h.endswith("*"))

    def refused(self, names: Iterable[str]) -> list[str]:
        return [h for h in names if h not in self.exact and not h.startswith(self.prefixes)]


RESPONSE = Allowed(RESPONSE_ALLOWED)

"""What crosses the gateway in headers: allow-lists rendered as native Envoy config (no Lua, no gRPC).

The direct and try lanes' provider clusters start their upstream filter chain with a
`header_mutation` filter whose request mutations remove every client header not on the provider's
allow-list (the direct lane's one filter: before it sets the credential), and end it (just before
the codec) with one whose response mutations remove every provider response header not on the
response allow-list. So the gateway's own filters (the try lane's Lua, the direct lane's
credential) set their headers after the client's are gone, and see the provider's response after
it was cleaned. The full lane's per-try ext_proc sees every header anyway and applies the same
lists itself (:class:`Allowed`): the router's chain, which Istio sidecars get too
(deploy/render_all.py), carries no regex that would need the RE2 limit raised in their runtime.

Envoy's `remove_on_match` removes the headers whose *name* matches a regex; an allow-list is the
complement of a finite set of names and prefixes, which is regular: :func:`complement_regex` builds
it from a trie (the bootstrap raises Envoy's RE2 program-size limit for it). RE2 matches it in time
linear in the name (docs/architecture.md, "What crosses the gateway", has the measured cost).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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
REQUEST_HEADERS_BY_API = {Api.OPENAI: ("openai-beta",), Api.ANTHROPIC: ("anthropic-version", "anthropic-beta")}
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
RE2_MAX_PROGRAM_SIZE = 4096
"""Envoy refuses a regex whose RE2 program is larger than runtime `re2.max_program_size.error_level`
(100 by default); an allow-list's complement is ~600-1,000. Set in the bootstrap's runtime."""


def runtime() -> dict[str, Any]:
    """The bootstrap's `layered_runtime`: the RE2 limit above, and the admin layer Envoy has by default."""
    return {"layers": [
        {"name": "sidegate", "static_layer": {"re2.max_program_size.error_level": RE2_MAX_PROGRAM_SIZE,
                                              "re2.max_program_size.warn_level": RE2_MAX_PROGRAM_SIZE}},
        {"name": "admin", "admin_layer": {}},
    ]}  # fmt: skip


def request_allowed(p: ProviderConfig) -> tuple[str, ...]:
    """The client headers this provider may receive."""
    return (_PSEUDO, *REQUEST_HEADERS_FORWARDED, *REQUEST_HEADERS_BY_API[p.api], *p.forward_client_headers)


RESPONSE_ALLOWED = (_PSEUDO, *RESPONSE_HEADERS_FORWARDED)


def allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """Is `name` on an allow-list (`x` exact, `x*` prefix)? (The rendered regexes' reference.)"""
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


class _Node:
    __slots__ = ("children", "end", "everything")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.end = False
        self.everything = False


def _trie(patterns: tuple[str, ...]) -> _Node:
    root = _Node()
    for p in patterns:
        node = root
        for ch in p.removesuffix("*"):
            node = node.children.setdefault(ch, _Node())
        if p.endswith("*"):
            node.everything = True
        else:
            node.end = True
    return root


def _class(chars: list[str]) -> str:
    return "[^" + "".join("\\" + c if c in "\\]^-[" else c for c in sorted(chars)) + "]"


def _complement(node: _Node) -> str | None:
    """A regex (RE2 syntax, full match) for the suffixes that make a name below `node` NOT allowed."""
    if node.everything:
        return None
    alts = [] if node.end else [""]
    alts.append(_class(list(node.children)) + ".*" if node.children else ".+")
    for ch, child in sorted(node.children.items()):
        sub = _complement(child)
        if sub is not None:
            alts.append(re.escape(ch) + sub)
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def complement_regex(patterns: tuple[str, ...]) -> str:
    """A regex (RE2, full match) matching exactly the header names NOT on the allow-list `patterns`
    (`x` exact, `x*` prefix)."""
    return _complement(_trie(patterns)) or "$^"


def _remove_not(patterns: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"remove_on_match": {"key_matcher": {"safe_regex": {"regex": complement_regex(patterns)}}}}]


def request_mutations(p: ProviderConfig) -> list[dict[str, Any]]:
    """Client headers off the provider's allow-list removed. (The query string is not Envoy's to
    drop here, a filter may not rewrite `:path`: a request with one never takes the direct lane,
    and the per-try stage always sets `:path`, with the provider's configured `query` if any.)"""
    return _remove_not(request_allowed(p))


def response_mutations() -> list[dict[str, Any]]:
    return _remove_not(RESPONSE_ALLOWED)


def _filter(name: str, request: list[dict[str, Any]], response: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": request, "response_mutations": response}}}  # fmt: skip


def request_filter(p: ProviderConfig) -> dict[str, Any]:
    """First upstream filter of a try lane cluster."""
    return _filter("sidegate.hygiene.request", request_mutations(p), [])


class Allowed:
    """An allow-list as the per-try stage applies it (full lane): the names it refuses."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, patterns: tuple[str, ...]):
        self.exact = frozenset(h for h in patterns if not h.endswith("*"))
        self.prefixes = tuple(h[:-1] for h in patterns if h.endswith("*"))

    def refused(self, names: Iterable[str]) -> list[str]:
        return [h for h in names if h not in self.exact and not h.startswith(self.prefixes)]


RESPONSE = Allowed(RESPONSE_ALLOWED)


def response_filter() -> dict[str, Any]:
    """Last upstream filter before the codec (try lane): the first to see a response."""
    return _filter("sidegate.hygiene.response", [], response_mutations())

"""The header allow-lists (sidegate/headers.py) rendered as native Envoy config (no Lua, no gRPC).

The direct and try lanes' provider clusters start their upstream filter chain with a
`header_mutation` filter whose request mutations remove every client header not on the provider's
allow-list (the direct lane's one filter: before it sets the credential), and end it (just before
the codec) with one whose response mutations remove every provider response header not on the
response allow-list. So the gateway's own filters (the try lane's Lua, the direct lane's
credential) set their headers after the client's are gone, and see the provider's response after
it was cleaned. The full lane's per-try ext_proc sees every header anyway and applies the same
lists itself (`sidegate.headers.Allowed`): the router's chain, which Istio sidecars get too
(deploy/render_all.py), carries no regex that would need the RE2 limit raised in their runtime.

Envoy's `remove_on_match` removes the headers whose *name* matches a regex; an allow-list is the
complement of a finite set of names and prefixes, which is regular: :func:`complement_regex` builds
it from a trie (the bootstrap raises Envoy's RE2 program-size limit for it). RE2 matches it in time
linear in the name (docs/architecture.md, "What crosses the gateway", has the measured cost).
"""

from __future__ import annotations

import re
from typing import Any

from sidegate.config import ProviderConfig
from sidegate.headers import RESPONSE_ALLOWED, request_allowed

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


def response_filter() -> dict[str, Any]:
    """Last upstream filter before the codec (try lane): the first to see a response."""
    return _filter("sidegate.hygiene.response", [], response_mutations())

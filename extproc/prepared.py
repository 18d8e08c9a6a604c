"""A full-lane stream's first try, prepared by the HTTP front (issue 25: translated streams' first event).

Behind the HTTP front a stream that needs the per-try stage (translation, an injected
`include_usage`, a provider-side model name...) takes the per-try gRPC ext_proc, which used to cost
three round trips before the provider was even asked: request headers, the request body (the
translation), response headers. When the front already knows the first try's provider (the
chain's first group is one provider, or a routing policy pinned it), it translates the body while
answering the check, as it does for the try lane (extproc/trylane.py), and its answer carries the
provider's body and the body's header changes as ext_authz metadata (`x-sidegate-body`,
`x-sidegate-set`, `x-sidegate-prepared` = the cluster). The per-try stream's request-headers
answer then replaces the body itself (`CONTINUE_AND_REPLACE`): Envoy sends no body message, one
round trip less. Any worker can serve that stream: everything it needs travels in the metadata.
Behind the gRPC front the gateway stream does the same, the values under one key
(`PREPARED_META`) of its own `sidegate` metadata.

The gRPC side still makes the try (credentials, header allow-lists, the response's translation,
metering, the fill): only the body's translation moved. Not prepared (today's body round trip):
a weighted first group, a signing provider (SigV4 signs the final body per try), a try with
per-try hooks (PII redaction and restore, a stored response's prepended turns, a content
tenant's trace), a body over `PREPARED_MAX`, any translation error (the per-try stage answers it
in the client's format, as before), every retry (re-translated for its provider).
"""

from __future__ import annotations

from typing import Any

from extproc.trylane import PREPARED_MAX, ascii_json, decode_set, encode_changes
from sidegate.core.live import ROUTING_VERSION_KEY
from sidegate.core.tries import ProviderTry, TryStage
from sidegate.lanes import first_try_provider
from sidegate.wire import TryWire, cluster_name


def prepare_stream(stage: TryStage, meta: dict[str, Any], body: bytes, rewritten: bool) -> dict[str, str]:
    """The check answer's headers that carry the first try's provider body ({}: not prepared): a
    full-lane stream (`meta` names no lane) whose body the request stages left as the client sent
    it (`rewritten`: they changed it, e.g. redacted: the per-try stage reads Envoy's body)."""
    if not meta.get("stream") or meta.get("lane") or rewritten:
        return {}
    cfg = stage.cfg
    named, versions = meta.get(ROUTING_VERSION_KEY), stage.versions
    if named is not None and versions is not None:  # the routing version Envoy routes this request with
        cfg = versions.pick(int(named)) or cfg
    name = first_try_provider(
        cfg, str(meta.get("model", "")), int(meta.get("start", 0)), str(meta.get("pin", ""))
    )
    if name is None or name in stage.signers:
        return {}
    cluster = cluster_name(name)
    try:
        t = stage.start_try(meta, cluster, 1)
        if not _preparable(t):
            return {}
        out, changes = t.request_body(body)  # (the try is dropped unregistered: it reserved nothing)
        out = ascii_json(out)
        client = ascii_json(body) if t.collect else b""
    except Exception:  # the per-try stage meets the same error with the body, in the client's format
        return {}
    if len(out) + len(client) > PREPARED_MAX:
        return {}
    changes.set["content-length"] = str(len(out))  # (the ASCII form: non-ASCII text is \u-escaped)
    headers = {TryWire.BODY: out.decode(), TryWire.PREPARED: cluster, **encode_changes(changes)}
    if client:
        headers[TryWire.CLIENT_BODY] = client.decode()
    return headers


def _preparable(t: ProviderTry) -> bool:
    """A try whose body the front may translate: no per-try hook (they may keep state from the
    request), nothing to sign, and a body the provider does not take as is (that one skips the body
    round trip already: mode override)."""
    return not t.hooks and t.provider_name not in t.stage.signers and not t.body_unchanged


PREPARED_META = "prepared"
"""Behind the gRPC front: the same headers, one key of the gateway's metadata (`sidegate`
namespace), taken out of the try's metadata before anything else reads it."""
PREPARED_FIELDS = (TryWire.PREPARED, TryWire.BODY, TryWire.SET, TryWire.CLIENT_BODY)


def authz_fields(authz: Any) -> dict[str, str] | None:
    """The prepared try's values among the HTTP front's ext_authz metadata (a protobuf Struct)."""
    if authz is None or TryWire.PREPARED not in authz.fields:
        return None
    fields = authz.fields
    return {k: fields[k].string_value for k in PREPARED_FIELDS if k in fields}


def prepared_for(t: ProviderTry, values: dict[str, str] | None) -> tuple[bytes, dict[str, str], bytes] | None:
    """This try's prepared body, the body's header changes and (a fill's) client body; None when
    the body must come from Envoy (not prepared, or prepared for another try: only the first try
    of the cluster it names)."""
    if not values or t.attempt != 1:
        return None
    if values.get(TryWire.PREPARED) != cluster_name(t.provider_name) or not _preparable(t):
        return None
    body = values.get(TryWire.BODY, "")
    if not body:  # (blanked once used)
        return None
    client = values.get(TryWire.CLIENT_BODY, "")
    if t.collect and not client:
        return None
    return body.encode(), decode_set(values.get(TryWire.SET, "")), client.encode()

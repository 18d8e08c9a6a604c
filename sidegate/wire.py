"""Every name Envoy and Python share: metadata namespaces, header names, route and cluster names,
lane names. The bootstrap writes them into Envoy's config and the Lua programs; the services read
them back from Envoy's messages. One module, so the two sides cannot drift apart."""

from __future__ import annotations

# -- the ext_proc front: the gateway's answer and the per-try stage's metadata ---------------------
ROUTE_HEADER = "x-sidegate-route"
ROUTE_KEY = "route"
"""The route value in the gateway's `sidegate` metadata (ext_proc front): routes match it too."""
PHASE_HEADER = "x-sidegate-phase"
REPLY_DETAILS = "sidegate"
"""Response code details of every ImmediateResponse Sidegate sends (keeps local_reply_config off them)."""
META_NS = "sidegate"
AUTHZ_NS = "envoy.filters.http.ext_authz"
"""The ext_authz extension's name: Envoy files ext_authz's dynamic metadata under it (the HTTP
front's too), and the bootstrap names the tenant-key filter after it."""

JWT_NS = "envoy.filters.http.jwt_authn"
"""Envoy's jwt_authn filter (JWT callers, sidegate/bootstrap/jwt_authn.py) files a verified token's
payload under it (key: the provider's name) and a failed one's status (key: `<provider>:failed`)."""
JWT_HEADER = "x-sidegate-jwt"
"""The jwt_authn namespace as JSON on the HTTP front's check request (set by Envoy, never the client's:
the check request drops a client-sent one) and in the inline authenticator's view of the headers."""
JWT_FAILED_SUFFIX = ":failed"
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
"""Where a client presents its Sidegate key (removed before anything goes upstream)."""
INTERNAL_TOKEN_HEADER = "x-sidegate-internal-token"
"""Envoy presents the internal token in it on every call to a Sidegate service (sidegate/trust.py)."""
TOKEN_COUNT_HEADER = "x-sidegate-token-count"
"""On a count_tokens answer: who counted, `provider` (forwarded) or `estimate` (the gateway)."""
AUTH_HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
"""An ext_authz HTTP answer names in it the request headers Envoy removes."""

# -- HTTP front (services.front: http; extproc/front.py) -----------------------------------------
CHECK_PREFIX = "/check"
"""Path prefix of the ext_authz HTTP check requests (the client's path follows)."""
REPLAY_ROUTE = "~replay"
"""Route value `~replay.<worker>.<key>`: replay an answer held by that extproc worker's front (a
cache hit, or a 5xx: Envoy's ext_authz HTTP client takes any 5xx from the front as its own failure)."""
FRONT_META_HEADER = "x-sidegate-meta"
FRONT_LANE_HEADER = "x-sidegate-lane"
FRONT_API_HEADER = "x-sidegate-api"
FRONT_SOURCE_HEADER = "x-sidegate-source"
FRONT_FILTER = "sidegate.front"
GATEWAY_FILTER = "sidegate.gateway"
"""The ext_proc front's filter (the features' request hooks, once per request)."""
TRY = "~try"
"""Suffix of a route value / cluster name in the HTTP try lane (HTTP front, non-streaming requests
that need the per-try stage): a Lua upstream filter posts each try to the front (extproc/trylane.py)."""
TRY_PREFIX = "/try/"
"""Path prefix of the try lane's calls to the front: `/try/request`, `/try/response`."""
TRY_NS = "sidegate.try"
"""Dynamic metadata the try lane's Lua keeps between a try's request and response (attempt, worker)."""


def cluster_name(provider: str) -> str:
    return f"provider.{provider}"


def direct_cluster_name(provider: str) -> str:
    return f"provider.{provider}{DIRECT}"


def try_cluster_name(provider: str) -> str:
    return f"provider.{provider}{TRY}"


def provider_of_cluster(name: str) -> str | None:
    if not name.startswith("provider."):
        return None
    return name.removeprefix("provider.").removesuffix(DIRECT).removesuffix(TRY)


DIRECT = "~direct"
"""Suffix of a route value / cluster name in the direct lane."""

USAGE_NS = "sidegate.usage"
STREAM_NS = "sidegate.stream"
"""Dynamic metadata of a direct-lane stream: `end` (complete|malformed|cut), `first_us` (the first
body chunk, microseconds since the epoch)."""

PROVIDER_HEADERS = (
    "authorization", "x-api-key", "api-key", "x-goog-api-key", "anthropic-version", "anthropic-beta",
    "x-amz-date", "x-amz-security-token", "x-amz-content-sha256",
)  # fmt: skip
"""Every header any provider scheme uses for credentials or versioning (set or removed on each try)."""
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{kind}-{what}" for what in ("requests", "tokens") for kind in ("limit", "remaining", "reset")
)

# -- lanes: how a try reaches its provider (the gateway's `lane` metadata) --------------------------
# No `lane` at all: the full lane (every try through the per-try ext_proc stage).
LANE_DIRECT = "direct"
"""Envoy alone per try (credential, usage, access log)."""
LANE_TRY = "try"
"""HTTP front, non-streaming: a Lua upstream filter posts each try to the front."""


def route_value(model: str, start: int) -> str:
    """Value of the route header for `model`'s chain starting at priority group `start`."""
    return model if start == 0 else f"{model}#{start}"


def pinned_route_value(model: str, provider: str) -> str:
    """Value of the route header for `model`'s chain tried first on `provider`, then on the chain's
    other providers in its order (models with a routing policy: ModelConfig.pins)."""
    return f"{model}@{provider}"


# -- live configuration (xDS; sidegate/routingstore.py) -------------------------------------------
CONFIG_VERSION_HEADER = "x-sidegate-config-version"
"""The routing document version of the route table Envoy matched the request against: Envoy sets it
on every request (a header_mutation on the virtual host, overwriting a client's), so the gateway
stage routes with the models that table has, whichever version it loaded last."""
PROVIDER_OVERRIDE_HEADER = "x-sidegate-provider"
"""A client's choice of first provider, where the model's policy allows it (RoutingPolicy.override_header)."""
XDS_CLUSTER = "sidegate_xds"
"""The bootstrap's one static cluster in xDS mode: the Sidegate xDS server (ADS)."""


class TryWire:
    """The try lane's wire contract: header names shared by its Lua (lua/envoy_try_lane.lua, where they are
    `${h_<name>}`) and extproc/trylane.py. Answers of the front carry them as headers; those of the
    check also become ext_authz metadata (the prepared try)."""

    SET = "x-sidegate-set"  # header changes to apply: `name=value&...`, percent-encoded
    REMOVE = "x-sidegate-remove"  # headers to remove: `a,b`
    STATUS = "x-sidegate-status"  # the provider's status to the front, the client's back
    ANSWER = "x-sidegate-answer"  # on a refusal: the body is already the client's error
    PASSED = "x-sidegate-h-"  # prefix of the provider response headers passed to the front
    BODY = "x-sidegate-body"  # the prepared try's body (ASCII JSON)
    PREPARED = "x-sidegate-prepared"  # the cluster the front prepared the first try for
    CLIENT_BODY = "x-sidegate-client-body"  # a prepared stream's client body, for its fill (ASCII JSON)
    KEY = "x-sidegate-try"  # the try's key in the worker holding it (`<worker>.<...>`)
    WORKER = "x-sidegate-worker"  # the worker holding the try
    PREVIOUS = "x-sidegate-previous"  # the request's previous try (Envoy retried)
    RETRIED = "x-sidegate-retried"  # /try/abandon: the abandoned try was replaced by a retry
    CLUSTER = "x-sidegate-cluster"
    ATTEMPT = "x-sidegate-attempt"

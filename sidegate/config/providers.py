"""Providers (where a model is served, with which key) and models (which providers, in which order)."""

from __future__ import annotations

import os
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from sidegate.config.base import StrictModel, url_parts
from sidegate.config.cache import CachePolicy
from sidegate.config.clouds import AwsAuth, AzureAuth, GoogleAuth, VertexConfig, bedrock_region
from sidegate.config.guard import GuardPolicy
from sidegate.errors import Api


class WeightedKey(StrictModel):
    env: str
    weight: int = Field(1, ge=1, le=1000)


AuthStyle = Literal["bearer", "x-api-key", "api-key", "x-goog-api-key", "google", "aws-sigv4", "azure-ad", "none"]
CLOUD_AUTH = frozenset({"google", "aws-sigv4", "azure-ad"})
"""Styles whose credential is a cloud identity (a token or a signature), never a configured key."""
_VERSION_SEGMENT = re.compile(r"^/v1[a-z0-9]*(?=/|$)")


NEVER_FORWARDED = frozenset({
    "authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "cookie2", "forwarded",
    "host", "te", "connection", "keep-alive", "upgrade", "transfer-encoding", "accept-encoding",
    "content-encoding", "x-real-ip", "via",
})  # fmt: skip
"""Client headers `forward_client_headers` may not name (nor a prefix of them)."""
NEVER_FORWARDED_PREFIXES = ("proxy-", "x-forwarded-", "x-sidegate-", "x-envoy-", ":")
_HEADER_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*\*?")


class ProviderConfig(StrictModel):
    api: Api
    """Wire schema the provider speaks: `openai` (incl. vLLM, Ollama, Groq, Mistral, Azure), `anthropic`
    (also on Vertex AI), `responses` (an OpenAI endpoint reached only through the Responses API: every
    client API is translated to Responses for it), `gemini` (Google AI or Vertex AI) or `bedrock`
    (AWS Bedrock's Converse API)."""
    responses: bool | None = None
    """`api: openai` only: does the provider also serve the Responses API (`POST /v1/responses`)?
    OpenAI does, and gets a Responses client's request as is; set false for OpenAI-shaped servers
    without it (vLLM, Ollama, Groq, Mistral...): a Responses request is then translated to chat
    completions for them. Default: true, except with a `path_prefix` naming the `{model}` (Azure's
    per-deployment paths have no Responses endpoint; its v1 API, `path_prefix: /openai/v1`, has)."""
    base_url: str
    api_key_env: str | None = None
    """Name of the environment variable holding the provider key (never the key itself)."""
    api_key_envs: list[WeightedKey] = Field(default_factory=list)
    """Several keys of one provider account/deployment, used by weight (spreads per-key rate limits)."""
    auth: AuthStyle | None = None
    """How the gateway proves itself: a key header (`bearer`, `x-api-key`, `api-key`,
    `x-goog-api-key`), a cloud identity (`google`, `aws-sigv4`, `azure-ad`) or `none`. Default:
    bearer for openai and responses, x-api-key for anthropic, x-goog-api-key for gemini, google on
    Vertex AI, aws-sigv4 for bedrock."""
    vertex: VertexConfig | None = None
    """Served by Vertex AI (`api: gemini` or `api: anthropic`): the project and location its paths name."""
    google: GoogleAuth | None = None
    """`auth: google` options (default: Application Default Credentials)."""
    aws: AwsAuth | None = None
    """`auth: aws-sigv4` options (default: the standard AWS chain, region from `base_url`)."""
    azure: AzureAuth | None = None
    """`auth: azure-ad` options (default: azure-identity's default chain, Cognitive Services scope)."""
    path_prefix: str = ""
    """Replaces the leading `/v1` of the canonical path (e.g. Azure `/openai/deployments/{model}`)."""
    query: str = ""
    """Appended to the upstream path, e.g. `api-version=2024-10-21` for Azure."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra static headers sent to this provider."""
    forward_client_headers: list[str] = Field(default_factory=list)
    """Client request headers this provider also receives, beyond the built-in allow-list
    (docs/architecture.md, "What crosses the gateway"): e.g. `openai-organization`,
    `openai-project` (the client then picks what Sidegate's provider key bills), `x-stainless-*`
    (a trailing `*` is a prefix). Credentials, cookies, proxy and forwarding
    headers and Sidegate's or Envoy's own are refused."""
    connect_timeout_s: float = Field(5.0, gt=0)
    max_connections: int = Field(1024, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.path not in ("", "/"):
            raise ValueError("must not contain a path (use path_prefix)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _responses_flag(self) -> ProviderConfig:
        implied = self.api is Api.RESPONSES and self.responses  # says what `api: responses` says
        if self.responses is not None and self.api is not Api.OPENAI and not implied:
            raise ValueError(f"`responses: {str(self.responses).lower()}` applies to `api: openai` providers only "
                             f"(this one is `api: {self.api.value}`)")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _cloud(self) -> ProviderConfig:
        style = self.auth_style
        if self.vertex is not None and self.api not in (Api.GEMINI, Api.ANTHROPIC):
            raise ValueError(f"`vertex` applies to `api: gemini` and `api: anthropic` providers (this one is `api: {self.api.value}`)")
        if self.api is Api.BEDROCK and style not in ("aws-sigv4", "bearer", "none"):
            raise ValueError(f"`api: bedrock` signs with `auth: aws-sigv4` (or a Bedrock API key, `auth: bearer`), not `{style}`")
        for block, wants in (("google", "google"), ("aws", "aws-sigv4"), ("azure", "azure-ad")):
            if getattr(self, block) is not None and style != wants:
                raise ValueError(f"`{block}` options apply to `auth: {wants}` only (this provider's is `{style}`)")
        if style in CLOUD_AUTH and (self.api_key_env or self.api_key_envs):
            raise ValueError(f"`auth: {style}` uses a cloud identity: remove `api_key_env` / `api_key_envs`")
        if style == "aws-sigv4" and not (self.aws and self.aws.region) and bedrock_region(self.host) is None:
            raise ValueError(f"`auth: aws-sigv4` needs a signing region: set `aws.region`, or use a base_url "
                             f"https://bedrock-runtime.<region>.amazonaws.com (this one's host is {self.host!r})")  # fmt: skip
        if self.vertex is not None and self.path_prefix:
            raise ValueError("`vertex` sets the paths itself: remove `path_prefix`")
        return self

    def provider_path(self, path: str, model: str, stream: bool) -> str:
        """The provider's path for a translator's canonical `path` (its API's own, e.g.
        `/v1/chat/completions`, `/v1beta/models/{m}:generateContent`, `/model/{m}/converse`):
        Vertex AI's project/location paths, `path_prefix` in place of the leading version segment
        (`/v1`, `/v1beta`), then `query`."""
        if self.vertex is not None:
            base = f"/v1/projects/{self.vertex.project}/locations/{self.vertex.location}/publishers"
            if self.api is Api.ANTHROPIC and path == "/v1/messages/count_tokens":  # one endpoint, model in the body
                path = f"{base}/anthropic/models/count-tokens:rawPredict"
            elif self.api is Api.ANTHROPIC:  # rawPredict: the model in the path, not the body
                path = f"{base}/anthropic/models/{model}:{'streamRawPredict' if stream else 'rawPredict'}"
            else:
                path = f"{base}/google" + _VERSION_SEGMENT.sub("", path, count=1)
        elif self.path_prefix:
            path = self.path_prefix.replace("{model}", model) + _VERSION_SEGMENT.sub("", path, count=1)
        if self.query:
            path += ("&" if "?" in path else "?") + self.query
        return path

    @property
    def serves_responses(self) -> bool:
        """An `api: openai` provider that also serves the Responses API (`responses`, or its default)."""
        if self.api is not Api.OPENAI:
            return False
        return self.responses if self.responses is not None else "{model}" not in self.path_prefix

    def upstream_api(self, inbound: Api) -> Api:
        """The API this provider is spoken to in, for a client speaking `inbound`: its own, except
        that a Responses client reaches an OpenAI provider that serves Responses as is."""
        if inbound is Api.RESPONSES and self.serves_responses:
            return Api.RESPONSES
        return self.api

    @field_validator("forward_client_headers")
    @classmethod
    def _forwardable(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            low = name.strip().lower()
            if not _HEADER_PATTERN.fullmatch(low):
                raise ValueError(f"{name!r} is not a header name (letters, digits, '-', '_'; a trailing '*' for a prefix)")
            stem, prefix = low.removesuffix("*"), low.endswith("*")
            hits = [f for f in (*NEVER_FORWARDED, *NEVER_FORWARDED_PREFIXES) if f.startswith(stem)] if prefix else []
            if hits or low in NEVER_FORWARDED or any(stem.startswith(f) for f in NEVER_FORWARDED_PREFIXES):
                raise ValueError(f"{name!r}: credentials, cookies, proxy, forwarding and internal headers are never forwarded")
            out.append(low)
        return out

    @property
    def auth_style(self) -> AuthStyle:
        if self.auth:
            return self.auth
        if self.vertex is not None:
            return "google"
        return _DEFAULT_AUTH.get(self.api, "bearer")

    @property
    def tls(self) -> bool:
        return url_parts(self.base_url)[0]

    @property
    def host(self) -> str:
        return url_parts(self.base_url)[1]

    @property
    def port(self) -> int:
        return url_parts(self.base_url)[2]

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def api_keys(self) -> list[tuple[str, int]]:
        """(key, weight) for every configured key that is set in the environment."""
        out = [(os.environ[k.env], k.weight) for k in self.api_key_envs if os.environ.get(k.env)]
        single = self.api_key()
        if single:
            out.insert(0, (single, 1))
        return out


_DEFAULT_AUTH: dict[Api, AuthStyle] = {Api.ANTHROPIC: "x-api-key", Api.GEMINI: "x-goog-api-key", Api.BEDROCK: "aws-sigv4"}


class RouteConfig(StrictModel):
    provider: str
    model: str | None = None
    """Provider-side model name (alias target); default: the client's model name."""
    weight: int = Field(1, ge=0, le=1000)
    """Share of traffic among routes with the same `priority`. 0: no share of the first tries (a
    canary at 100/0, or a provider drained before its removal): it is tried only as a fallback,
    right after its priority's other routes, and serves overrides and routing policies, which name
    it (`model@provider`). Its priority needs another route with a share."""
    priority: int | None = None
    """Routes with the same priority are load balanced by weight; lower priorities are tried first.
    Default: the route's position in the list (a plain ordered fallback chain)."""


class BreakerConfig(StrictModel):
    """Gateway-side ejection of a failing provider from a model's chain (see docs/fallback.md)."""

    failures: int = Field(5, ge=1)
    """Consecutive failed tries (429, 5xx, timeouts, resets) that eject a provider."""
    ejection_s: float = Field(30.0, gt=0)
    """First ejection time; doubles on each re-ejection (capped at max_ejection_s)."""
    max_ejection_s: float = Field(300.0, gt=0)
    honour_retry_after: bool = True
    """A 429/503 with `retry-after` ejects the provider at once, for that long (capped)."""


class RoutingPolicy(StrictModel):
    """How the gateway picks a model's first provider for a request (docs/routing.md). Fallbacks
    after it keep the chain's order, and the breaker's ejections apply whatever the policy."""

    kind: Literal["ordered", "cost", "latency"] = "ordered"
    """`ordered`: the chain as configured (priorities, weights). `cost`: the healthy provider whose
    price makes the request's estimated tokens cheapest. `latency`: the healthy provider with the
    lowest time to first token (an EWMA shared by every replica through the store), penalised by
    its error rate."""
    override_header: bool = False
    """A client may name the provider to try first in `x-sidegate-provider` (one of this model's
    routes; anything else is refused 400): canary tests of a provider, whatever the weights."""
    tenants: dict[str, str] = Field(default_factory=dict)
    """Tenant -> the provider it is always tried on first (a canary for one tenant)."""


class ModelConfig(StrictModel):
    routes: list[RouteConfig] = Field(min_length=1)
    """Ordered chain: the first is primary, the rest are fallbacks."""
    retry_on_status: list[int] = Field(default_factory=lambda: [429, 500, 502, 503, 504, 529])
    per_try_timeout_s: float = Field(60.0, gt=0)
    per_try_idle_timeout_s: float | None = Field(None, gt=0)
    """Longest silence of a provider within one try, before or during its answer (a stream that
    stalls mid-way is cut after this). None: `per_try_timeout_s`."""
    timeout_s: float = Field(300.0, ge=0)
    """Overall request timeout (0 = none, for long streams)."""
    default_max_tokens: int = Field(4096, ge=1)
    cache: CachePolicy | None = None
    """Response cache policy for this model (default: `defaults.cache`)."""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    guard: GuardPolicy | Literal["default"] | None = "default"
    """PII/injection guard for this model: a policy, null (off), or "default" (`defaults.guard`)."""
    policy: RoutingPolicy = Field(default_factory=RoutingPolicy)
    """How the first provider is picked (ordered, cost, latency; canary overrides)."""

    @property
    def pins(self) -> bool:
        """The gateway picks this model's first provider itself: Envoy has one route per provider
        of the chain (`<model>@<provider>`) beside the chain's own."""
        p = self.policy
        return p.kind != "ordered" or p.override_header or bool(p.tenants)

    @model_validator(mode="after")
    def _unique_providers(self) -> ModelConfig:
        names = [r.provider for r in self.routes]
        if len(names) != len(set(names)):
            raise ValueError("a provider may appear only once in a model's route chain")
        by_prio: dict[int, list[RouteConfig]] = {}
        for i, r in enumerate(self.routes):
            by_prio.setdefault(r.priority if r.priority is not None else i, []).append(r)
        for prio, group in by_prio.items():
            if not any(r.weight for r in group):
                names = ", ".join(r.provider for r in group)
                raise ValueError(f"routes: the routes of priority {prio} ({names}) all have weight 0: "
                                 "give one a share, or move them to another route's priority")  # fmt: skip
        for tenant, provider in self.policy.tenants.items():
            if provider not in names:
                raise ValueError(f"policy.tenants.{tenant}: {provider!r} is not a provider of this model's routes")
        return self

    def groups(self) -> list[list[RouteConfig]]:
        """Routes grouped by priority, in order (a group is load balanced by weight). Routes with
        weight 0 form a group of their own right after their priority's (fallbacks, no first tries)."""
        by_prio: dict[int, list[RouteConfig]] = {}
        for i, r in enumerate(self.routes):
            by_prio.setdefault(r.priority if r.priority is not None else i, []).append(r)
        out = []
        for k in sorted(by_prio):
            out.append([r for r in by_prio[k] if r.weight])
            if zero := [r for r in by_prio[k] if not r.weight]:
                out.append(zero)
        return out



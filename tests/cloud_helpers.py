"""The cloud token e2e module's config and checks: Vertex AI (Anthropic with a service account
key, a wrong key and the metadata server; Gemini), Azure OpenAI with Entra ID, fallback chains
across clouds, and what the Vertex fake received."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
from anthropic.types import MessageCreateParams
from harness import Stack
from pydantic import TypeAdapter

from sidegate.fakes import FakeProviderThread
from sidegate.fakes.tokens import TokenIssuer, service_account_file

TOKEN_LIFE_S = 8
SA_EMAIL = "sidegate-e2e@fake-project.iam.gserviceaccount.com"
VERTEX_PREFIX = "/v1/projects/fake-project/locations/us-east5/publishers/anthropic/models/"
GEMINI_PATH = "/v1/projects/fake-project/locations/us-east5/publishers/google/models/gemini-2.0-flash:"
_ANTHROPIC_REQ = TypeAdapter(MessageCreateParams)


def cloud_config(tmp: Path, issuer: TokenIssuer, cloud_url: str) -> dict[str, Any]:
    good, bad = tmp / "sa.json", tmp / "sa-wrong-key.json"
    issuer.add_service_account(SA_EMAIL, service_account_file(str(good), SA_EMAIL, issuer.token_uri))
    service_account_file(str(bad), SA_EMAIL, issuer.token_uri)  # same account, a key Google never saw
    (tmp / "gcloud").mkdir(exist_ok=True)
    vertex = {"project": "fake-project", "location": "us-east5"}
    margin = {"refresh_margin_s": TOKEN_LIFE_S - 3}
    return {
        "providers": {
            "vertex": {"api": "anthropic", "base_url": cloud_url, "vertex": vertex,
                       "google": {"credentials_file": str(good), **margin}},
            "vertex-wrong-key": {"api": "anthropic", "base_url": cloud_url, "vertex": vertex,
                                 "google": {"credentials_file": str(bad)}},
            "vertex-adc": {"api": "anthropic", "base_url": cloud_url, "vertex": vertex, "google": margin},
            "vertex-gemini": {"api": "gemini", "base_url": cloud_url, "vertex": vertex,
                              "google": {"credentials_file": str(good), **margin}},
            "azure": {"api": "openai", "base_url": cloud_url, "auth": "azure-ad", "azure": margin,
                      "path_prefix": "/openai/deployments/{model}", "query": "api-version=2024-10-21"},
        },
        "models": {
            "claude-vertex": {"routes": [{"provider": "vertex", "model": "claude-sonnet-4-5@20250929"}]},
            "claude-wrong-key": {"routes": [{"provider": "vertex-wrong-key", "model": "claude-sonnet-4-5"}]},
            "claude-adc": {"routes": [{"provider": "vertex-adc", "model": "claude-sonnet-4-5"}]},
            "azure-then-vertex": {"routes": [{"provider": "azure", "model": "gpt-4o-deployment"},
                                             {"provider": "vertex", "model": "claude-sonnet-4-5"}]},
            "gemini-vertex": {"routes": [{"provider": "vertex-gemini", "model": "gemini-2.0-flash"}]},
            "gpt-azure": {"routes": [{"provider": "azure", "model": "gpt-4o-deployment"}]},
            "claude-then-openai": {"routes": [{"provider": "vertex", "model": "claude-sonnet-4-5"},
                                              {"provider": "openai", "model": "gpt-4o-mini"}]},
        },
        "env": {
            # ADC: no key file, no gcloud login: the metadata server (here, the fake) answers.
            "GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": str(tmp / "gcloud"),
            "GCE_METADATA_HOST": issuer.metadata_host, "GCE_METADATA_IP": issuer.metadata_host,
            # Azure App Service managed identity.
            "IDENTITY_ENDPOINT": issuer.identity_endpoint, "IDENTITY_HEADER": issuer.identity_header,
        },
    }  # fmt: skip


def oai(gw: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys["acme"].key, max_retries=0, timeout=20)


def ant(gw: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key=gw.keys["acme"].key, max_retries=0, timeout=20)


def vertex_body(
    cloud: FakeProviderThread, model: str = "claude-sonnet-4-5@20250929", stream: bool = False
) -> dict:
    """The last Vertex request: its path names the model and the method; its body is the Messages
    API's without the model, with the Vertex version; the token was one the issuer minted."""
    rec = cloud.requests[-1]
    assert rec.path == VERTEX_PREFIX + model + (":streamRawPredict" if stream else ":rawPredict")
    body = rec.json
    assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
    assert "anthropic-version" not in rec.headers and "x-api-key" not in rec.headers
    assert rec.headers["authorization"].startswith("Bearer ya29.")
    _ANTHROPIC_REQ.validate_python(
        {**{k: v for k, v in body.items() if k != "anthropic_version"}, "model": model}
    )
    return body


def ledgered(gw: Stack, model: str, usage: tuple[int, int]) -> None:
    """Usage trued up exactly: the ledger holds the provider's counts."""
    rec = gw.wait_ledger(lambda r: r.model == model and (r.input_tokens, r.output_tokens) == usage)
    assert rec.status == 200

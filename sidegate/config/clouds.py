"""Cloud identities and platforms a provider may use instead of a static key: Google (Vertex AI,
OAuth2 access tokens), AWS (Bedrock, SigV4 signatures) and Azure (Entra ID tokens). Each block
only names where the identity comes from: the secrets themselves stay in the environment, key
files and metadata servers their SDKs read (google-auth, botocore, azure-identity)."""

from __future__ import annotations

import re

from pydantic import Field

from sidegate.config.base import StrictModel

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


class VertexConfig(StrictModel):
    """A model served by Vertex AI: Gemini (`api: gemini`) or Anthropic's (`api: anthropic`) models,
    under one Google Cloud project and location (`base_url` is the location's endpoint, e.g.
    `https://us-east5-aiplatform.googleapis.com`, or `https://aiplatform.googleapis.com` for `global`)."""

    project: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    location: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")


class GoogleAuth(StrictModel):
    """`auth: google`: OAuth2 access tokens minted by google-auth and refreshed in the background."""

    credentials_file: str | None = None
    """A service account's JSON key file. None: Application Default Credentials
    (`GOOGLE_APPLICATION_CREDENTIALS`, then the metadata server: GKE workload identity, GCE)."""
    scopes: list[str] = Field(default_factory=lambda: [CLOUD_PLATFORM_SCOPE], min_length=1)
    refresh_margin_s: float = Field(300.0, ge=0)
    """A token is replaced this long before it expires (the request path never waits for one)."""


class AwsAuth(StrictModel):
    """`auth: aws-sigv4`: every try signed with SigV4 (botocore), credentials from the standard AWS
    chain (environment, shared config/credentials files and `profile`, IRSA web identity, ECS/EC2
    metadata)."""

    region: str | None = Field(None, pattern=r"^[a-z0-9-]+$")
    """Signing region. None: read from `base_url` (`bedrock-runtime.<region>.amazonaws.com`)."""
    profile: str | None = None
    """A named profile of the shared config files; None: the chain's default."""
    service: str = "bedrock"
    """The SigV4 service name."""
    refresh_s: float = Field(60.0, gt=0)
    """The chain is re-read this often, off the request path: rotated keys and renewed
    role credentials take effect without a restart."""


_BEDROCK_HOST = re.compile(r"(?:^|\.)bedrock-runtime(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?$")


def bedrock_region(host: str) -> str | None:
    """The region a Bedrock runtime endpoint names (`bedrock-runtime.<region>.amazonaws.com`, its
    FIPS and China forms, a VPC endpoint's DNS name ending in it), else None."""
    m = _BEDROCK_HOST.search(host.lower())
    return m.group(1) if m else None


class AzureAuth(StrictModel):
    """`auth: azure-ad`: Microsoft Entra ID tokens from azure-identity (environment service
    principal, workload identity, managed identity...), refreshed in the background."""

    scope: str = COGNITIVE_SERVICES_SCOPE
    client_id: str | None = None
    """A user-assigned managed identity's (or workload identity's) client id; None: the default."""
    refresh_margin_s: float = Field(300.0, ge=0)

"""Provider credentials: one small interface (:class:`Credential`), one module per scheme.

``bearer`` (`authorization: Bearer`), ``header`` (a key in a named header), ``pool`` (several
weighted keys, either style), ``none``; the cloud identities ``google`` (OAuth2 tokens: Vertex AI),
``azure`` (Entra ID tokens) and ``aws`` (SigV4 signatures: Bedrock); ``env`` is the scheme Envoy
applies itself from its own environment (direct lane, try lane). :func:`for_provider` picks a
provider's scheme from its config.
"""

from __future__ import annotations

from sidegate.config import ProviderConfig
from sidegate.credentials.base import Credential, RefreshingCredential, SigningCredential, scrubbable
from sidegate.credentials.bearer import BearerKey
from sidegate.credentials.header import HeaderKey
from sidegate.credentials.none import NoCredential
from sidegate.credentials.pool import PooledKey

__all__ = ["Credential", "RefreshingCredential", "SigningCredential", "for_provider"]


def for_provider(p: ProviderConfig, name: str = "") -> Credential:
    """The provider's scheme, with its keys read from this process's environment now (`name`: the
    provider's, for the cloud schemes' log lines)."""
    style = p.auth_style
    # The cloud SDKs load only for providers that use them.
    if style == "google":
        from sidegate.credentials.google import GoogleToken

        return GoogleToken(p, name)
    if style == "azure-ad":
        from sidegate.credentials.azure import EntraToken

        return EntraToken(p, name)
    if style == "aws-sigv4":
        from sidegate.credentials.aws import SigV4

        return SigV4(p)
    keys = p.api_keys()
    if not keys:
        return NoCredential()
    if style == "none":
        return NoCredential(scrubbable([k for k, _ in keys]))
    if len(keys) == 1:
        key = keys[0][0]
        return BearerKey(key) if style == "bearer" else HeaderKey(style, key)
    return PooledKey("authorization", "Bearer ", keys) if style == "bearer" else PooledKey(style, "", keys)

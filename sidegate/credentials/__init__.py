"""Provider credentials: one small interface (:class:`Credential`), one module per scheme.

``bearer`` (`authorization: Bearer`), ``header`` (a key in a named header), ``pool`` (several
weighted keys, either style), ``none``; ``env`` is the scheme Envoy applies itself from its own
environment (direct lane, try lane). :func:`for_provider` picks a provider's scheme from its config.
"""

from __future__ import annotations

from sidegate.config import ProviderConfig
from sidegate.credentials.base import Credential, scrubbable
from sidegate.credentials.bearer import BearerKey
from sidegate.credentials.header import HeaderKey
from sidegate.credentials.none import NoCredential
from sidegate.credentials.pool import PooledKey

__all__ = ["Credential", "for_provider"]


def for_provider(p: ProviderConfig) -> Credential:
    """The provider's scheme, with its keys read from this process's environment now."""
    keys = p.api_keys()
    if not keys:
        return NoCredential()
    style = p.auth_style
    if style == "none":
        return NoCredential(scrubbable([k for k, _ in keys]))
    if len(keys) == 1:
        key = keys[0][0]
        return BearerKey(key) if style == "bearer" else HeaderKey(style, key)
    return PooledKey("authorization", "Bearer ", keys) if style == "bearer" else PooledKey(style, "", keys)

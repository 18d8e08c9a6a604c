"""`auth: azure-ad`: Microsoft Entra ID tokens for Azure OpenAI, from azure-identity, refreshed in
the background.

Without `azure.client_id`: azure-identity's default chain reduced to what works unattended on a
server (an environment service principal, workload identity, managed identity); the developer and
interactive sources (CLI, PowerShell, VS Code, shared cache, browser, broker) are excluded, so a
server never blocks on, or picks up, a person's login. With it: that user-assigned managed identity
(or workload identity) only.
"""

from __future__ import annotations

import logging
from typing import Any

from sidegate.config import ProviderConfig
from sidegate.config.clouds import AzureAuth
from sidegate.credentials.refreshing import FETCH_TIMEOUT_S, RefreshingToken

_UNATTENDED_ONLY = {
    "exclude_cli_credential": True,
    "exclude_developer_cli_credential": True,
    "exclude_powershell_credential": True,
    "exclude_visual_studio_code_credential": True,
    "exclude_shared_token_cache_credential": True,
    "exclude_interactive_browser_credential": True,
    "exclude_broker_credential": True,
}


class EntraToken(RefreshingToken):
    name = "azure-ad"

    def __init__(self, p: ProviderConfig, provider: str = "") -> None:
        self.opts = p.azure or AzureAuth()
        super().__init__(provider or p.host, self.opts.refresh_margin_s)
        self._credential: Any = None  # built on first fetch, in the fetch thread

    def fetch(self) -> tuple[str, float]:
        if self._credential is None:
            self._credential = _load(self.opts.client_id)
        token = self._credential.get_token(self.opts.scope)
        return token.token, float(token.expires_on)


def _load(client_id: str | None) -> Any:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    # azure-identity logs every token request and success at INFO: one line per refresh per process
    # adds nothing to the gateway's own log (failures, at WARNING, still show).
    for name in ("azure.identity", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    bounded = {"connection_timeout": FETCH_TIMEOUT_S, "read_timeout": FETCH_TIMEOUT_S}
    if client_id:
        return ManagedIdentityCredential(client_id=client_id, **bounded)
    return DefaultAzureCredential(**_UNATTENDED_ONLY, **bounded)

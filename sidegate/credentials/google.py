"""`auth: google`: OAuth2 access tokens for Vertex AI, from google-auth, refreshed in the background.

A service account key file (`google.credentials_file`) signs a JWT assertion that its `token_uri`
exchanges for an access token; without one, Application Default Credentials decide
(`GOOGLE_APPLICATION_CREDENTIALS`, then the metadata server: GKE workload identity, GCE, Cloud Run;
google-auth reads `GCE_METADATA_HOST` / `GCE_METADATA_IP`). Either way `refresh` always asks for a
new token (google-auth keeps no cache of its own), so each refresh is a real rotation; a key
file replaced in place (a rotated service account key) is read again at the next refresh.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any

from sidegate.config import ProviderConfig
from sidegate.config.clouds import GoogleAuth
from sidegate.credentials.refreshing import FETCH_TIMEOUT_S, RefreshingToken

_UTC = datetime.UTC
DEFAULT_LIFETIME_S = 3600.0


class GoogleToken(RefreshingToken):
    name = "google"

    def __init__(self, p: ProviderConfig, provider: str = "") -> None:
        self.opts = p.google or GoogleAuth()
        super().__init__(provider or p.host, self.opts.refresh_margin_s)
        self._credentials: Any = None  # built on first fetch: ADC may probe the network
        self._request: Any = None
        self._stamp: tuple[int, int, int] | None = None

    def fetch(self) -> tuple[str, float]:
        path = self.opts.credentials_file
        stamp = _stamp(path) if path else None  # a replaced key file (rotation) is read again
        if self._credentials is None or stamp != self._stamp:
            self._credentials, self._request = _load(path, self.opts.scopes)
            self._stamp = stamp
        creds = self._credentials
        creds.refresh(self._request)
        expiry = creds.expiry  # naive UTC (google-auth's convention)
        if expiry is None:  # no expiry given: Google's access tokens live an hour
            return creds.token, time.time() + DEFAULT_LIFETIME_S
        return creds.token, expiry.replace(tzinfo=_UTC).timestamp()


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _load(credentials_file: str | None, scopes: list[str]) -> tuple[Any, Any]:
    import google.auth
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    class BoundedRequest(Request):  # type: ignore[misc]
        """google-auth's transport with every call bounded (its default timeout is two minutes)."""

        def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                     timeout: float | None = None, **kwargs: Any) -> Any:  # fmt: skip
            bound = FETCH_TIMEOUT_S if timeout is None else min(timeout, FETCH_TIMEOUT_S)
            return super().__call__(url, method, body, headers, timeout=bound, **kwargs)

    if credentials_file:
        creds = service_account.Credentials.from_service_account_file(credentials_file, scopes=scopes)
    else:
        creds, _ = google.auth.default(scopes=scopes)
    return creds, BoundedRequest()

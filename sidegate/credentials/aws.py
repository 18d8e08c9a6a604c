"""AWS SigV4 (Bedrock): every try signed with botocore's signer, credentials from the standard chain.

The chain (botocore's: environment, shared config/credentials files and their `profile`, IRSA web
identity, ECS container and EC2 instance metadata) is read in a thread at ``start`` and again every
``aws.refresh_s`` by a background task, never on a request's path: ``sign`` uses a frozen copy of
the current credentials, so it is pure CPU. A static source (environment, files) is re-read from
scratch each time, so keys rotated in the credentials file take effect without a restart;
credentials botocore refreshes itself (assumed roles, web identity, metadata) are refreshed in that
task before they expire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.session import Session

from sidegate.config import ProviderConfig
from sidegate.config.clouds import AwsAuth, bedrock_region
from sidegate.credentials.base import scrubbable, stop_refresher
from sidegate.credentials.refreshing import OwnThread

__all__ = ["SigV4"]

log = logging.getLogger("sidegate.credentials.aws")

FIRST_READ_S = 10.0
"""Longest wait at start for the first credentials (a metadata server that never answers must not
hold the gateway's start): after it the tries go unsigned, the provider refuses them (the
gateway's 502) and the background task keeps trying."""
MAX_REFRESHABLE_WAIT_S = 300.0
"""Longest wait between two refreshes of temporary credentials, whatever `refresh_s` says."""
RETRY_S = 5.0
"""How soon a failed read is tried again (at most `refresh_s`)."""
# Never signed: pseudo-headers are not headers on the wire; Envoy may rewrite content-length
# (the signature covers the body's hash anyway); botocore leaves out the hop-by-hop ones itself.
_UNSIGNED = frozenset({"content-length", "authorization", "x-amz-date", "x-amz-security-token", "user-agent"})


class SigV4:
    """A SigningCredential and RefreshingCredential: ``sign`` returns `authorization`, `x-amz-date`
    and, for temporary credentials, `x-amz-security-token`; ``apply`` sets nothing."""

    def __init__(self, p: ProviderConfig) -> None:
        aws = p.aws or AwsAuth()
        region = aws.region or bedrock_region(p.host)
        if region is None:
            # The config refuses this already (ProviderConfig); a config built in code gets it here.
            raise ValueError(
                f"`auth: aws-sigv4` needs a signing region: set `aws.region`, or use a base_url of the form "
                f"https://bedrock-runtime.<region>.amazonaws.com (this one's host is {p.host!r})"
            )
        self.region = region
        self.service = aws.service
        self.profile = aws.profile
        self.refresh_s = aws.refresh_s
        self.secrets: tuple[str, ...] = ()
        self._frozen: ReadOnlyCredentials | None = None
        self._refreshable: RefreshableCredentials | None = None
        self._signer: SigV4Auth | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed: Callable[[], None] = lambda: None
        self._problem = ""
        """The last failure to read the chain ("" after a success)."""
        self._thread = OwnThread("aws-credentials")

    @property
    def access_key_id(self) -> str | None:
        """The access key id signing now (for logs and tests: not a secret)."""
        return self._frozen.access_key if self._frozen is not None else None

    def apply(self, headers: dict[str, str]) -> None:
        """Nothing: the proof is the signature ``sign`` adds once the body is known."""

    def sign(
        self, method: str, authority: str, path: str, headers: dict[str, str], body: bytes
    ) -> dict[str, str]:
        """SigV4 over what Envoy sends: `method` on `https://<authority><path>` (the same path bytes;
        the `host` header is `authority`), the try's plain headers and `body`. No credentials yet:
        nothing (the provider's 403 becomes the gateway's 502)."""
        signer = self._signer
        if signer is None:
            return {}
        signed = {k: v for k, v in headers.items() if k[0] != ":" and k not in _UNSIGNED}
        signed["host"] = authority
        req = AWSRequest(method=method, url=f"https://{authority}{path}", data=body, headers=signed)
        signer.add_auth(req)
        out = {"authorization": req.headers["Authorization"], "x-amz-date": req.headers["X-Amz-Date"]}
        token = req.headers.get("X-Amz-Security-Token")
        if token:
            out["x-amz-security-token"] = token
        return out

    # -- the chain, off the request path -----------------------------------------------------------
    def _read(self) -> ReadOnlyCredentials:
        """The current credentials (blocking: files, metadata servers, STS): in a thread only."""
        if self._refreshable is None:
            creds: Credentials | None = Session(profile=self.profile).get_credentials()
            if creds is None:
                raise LookupError(
                    "no AWS credentials found (environment, shared files, web identity, metadata)"
                )
            if not isinstance(creds, RefreshableCredentials):
                return creds.get_frozen_credentials()  # a static source: read afresh next time
            self._refreshable = creds
        # Refreshes them (STS, metadata) when they are near expiry; else the cached copy.
        return self._refreshable.get_frozen_credentials()

    def _install(self, frozen: ReadOnlyCredentials) -> None:
        if frozen == self._frozen:
            return
        rotated = self._frozen is not None and frozen.access_key != self._frozen.access_key
        self._frozen = frozen
        self._signer = SigV4Auth(frozen, self.service, self.region)
        self.secrets = scrubbable([s for s in (frozen.secret_key, frozen.token) if s])
        self._changed()
        if rotated:
            log.info("AWS credentials changed (access key id %s)", frozen.access_key)

    async def _refresh_once(self, timeout: float | None = None) -> bool:
        try:
            frozen = await asyncio.wait_for(self._thread.run(self._read), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any failure of the chain is retried; its type says what
            # The exception's type and message name a file, profile or endpoint, never a key. The
            # same failure again (retried every few seconds) is not repeated at warning level.
            problem = f"{type(e).__name__}: {e}"
            level = logging.DEBUG if problem == self._problem else logging.WARNING
            self._problem = problem
            log.log(level, "AWS credentials (profile %s): %s%s", self.profile or "default", problem,
                    "; the last good ones keep signing" if self._frozen else "; tries go unsigned")  # fmt: skip
            return False
        if self._problem:
            log.info("AWS credentials (profile %s) read again", self.profile or "default")
            self._problem = ""
        self._install(frozen)
        return True

    async def start(self, secrets_changed: Callable[[], None]) -> None:
        self._changed = secrets_changed
        ok = await self._refresh_once(FIRST_READ_S)
        self._task = asyncio.create_task(self._keep_fresh(ok), name="aws-credentials")

    async def _keep_fresh(self, ok: bool) -> None:
        while True:
            wait = self.refresh_s if ok else min(RETRY_S, self.refresh_s)
            if self._refreshable is not None:
                # botocore renews temporary credentials 15 minutes before they expire: asking at
                # least every 5 minutes renews them well before its 10-minute mandatory window.
                wait = min(wait, MAX_REFRESHABLE_WAIT_S)
            await asyncio.sleep(wait)
            ok = await self._refresh_once()

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_refresher(task)
        self._thread.close()

"""Sign-in with an OIDC issuer: its JWTs verified in Python (pyjwt) and mapped to a Principal.

The JWKS comes from a local file, the config itself, or the issuer's URL. A URL is fetched when the
admin API starts and then refreshed in the background every ``jwks_cache_s`` (off the request path);
a request waits for a fetch only when its token names a key id the cache does not know (a rotation
at the issuer), at most once per ``jwks_min_refresh_s``. If the JWKS was never fetched, a JWT is
answered 503 ``oidc_unavailable`` naming the URL, not a misleading 401; once fetched, the last good
key set stays in use while the issuer is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson

from sidegate.admin.controlplane.rules import TENANT_PATTERN
from sidegate.admin.principal import Principal, Role
from sidegate.config.admin import OidcConfig
from sidegate.tasks import cancel_and_wait

log = logging.getLogger("sidegate.admin")

_TENANT = re.compile(TENANT_PATTERN[1:-1])
# Most powerful first: a token naming several roles gets the first it names in this order.
_ROLE_ORDER = (Role.OWNER, Role.TENANT_ADMIN, Role.VIEWER)


class OidcRejected(Exception):
    """A refused JWT: ``status`` 401 (not a valid token), 403 (valid, but no admin role) or 503."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def _key_set(data: Any, where: str) -> dict[str | None, jwt.PyJWK]:
    """kid -> key of a JWKS document (keys pyjwt cannot use, e.g. of another type, are skipped)."""
    try:
        jwks = jwt.PyJWKSet.from_dict(data)
    except (jwt.PyJWKSetError, jwt.InvalidKeyError, TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"the JWKS from {where} has no usable key ({exc})") from None
    return {k.key_id: k for k in jwks.keys}


Fetch = Callable[[], Awaitable[Any]]


class OidcVerifier:
    """Verifies admin JWTs from one issuer; ``fetch`` (tests) replaces the HTTP fetch of ``jwks_url``."""

    def __init__(
        self, cfg: OidcConfig, fetch: Fetch | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.cfg = cfg
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = -1.0
        self._tried_at = -1e9
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._fetch = fetch or self._http_fetch
        if cfg.jwks is not None:
            self._keys = _key_set(cfg.jwks, "the config")
        elif cfg.jwks_file is not None:
            self._keys = _key_set(orjson.loads(Path(cfg.jwks_file).read_bytes()), cfg.jwks_file)

    @property
    def remote(self) -> bool:
        return self.cfg.jwks_url is not None

    # ---- the JWKS cache ----

    async def _http_fetch(self) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.jwks_timeout_s)
            )
        async with self._session.get(str(self.cfg.jwks_url)) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            return orjson.loads(await resp.read())

    async def refresh(self, *, unless_tried_within: float = 0.0) -> bool:
        """Fetch the JWKS (one fetch at a time; skipped if one was tried less than
        ``unless_tried_within`` seconds ago, so a burst of requests waiting here fetches once).
        False (and the old keys kept) if it failed or was skipped."""
        async with self._lock:
            if self._clock() - self._tried_at < unless_tried_within:
                return False
            self._tried_at = self._clock()
            try:
                self._keys = _key_set(await self._fetch(), str(self.cfg.jwks_url))
            except (OSError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
                log.warning(
                    "could not fetch the OIDC JWKS from %s: %s", self.cfg.jwks_url, exc or type(exc).__name__
                )
                return False
            self._fetched_at = self._clock()
            return True

    async def _refresh_loop(self) -> None:
        while True:
            ok = await self.refresh()
            await asyncio.sleep(self.cfg.jwks_cache_s if ok else max(1.0, self.cfg.jwks_min_refresh_s))

    async def start(self) -> None:
        """Fetch a remote JWKS once (not fatal if unreachable), then keep it fresh in the background."""
        if self.remote and self._task is None:
            await self.refresh()
            self._task = asyncio.create_task(self._refresh_loop())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        key = self._find(kid)
        if key is None and self.remote and self._clock() - self._tried_at >= self.cfg.jwks_min_refresh_s:
            # A key rotated at the issuer, or never fetched yet.
            await self.refresh(unless_tried_within=self.cfg.jwks_min_refresh_s)
            key = self._find(kid)
        if key is not None:
            return key
        if not self._keys:
            raise OidcRejected(
                503,
                "oidc_unavailable",
                f"the OIDC issuer's JWKS ({self.cfg.jwks_url}) could not be fetched; try again",
            )
        raise OidcRejected(401, "unauthorized", "the token's signing key is not in the issuer's JWKS")

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return None

    # ---- tokens ----

    async def principal(self, token: str) -> Principal:
        """The principal a JWT stands for, or OidcRejected."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcRejected(401, "unauthorized", "malformed token") from None
        key = await self._key(header.get("kid"))
        cfg = self.cfg
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=cfg.algorithms,
                audience=cfg.audiences,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcRejected(401, "unauthorized", f"invalid token: {exc}") from None
        return self.map_claims(claims)

    def map_claims(self, claims: dict[str, Any]) -> Principal:
        cfg = self.cfg
        sub = claims.get(cfg.subject_claim)
        if not isinstance(sub, str) or not sub:
            raise OidcRejected(401, "unauthorized", f"the token has no {cfg.subject_claim} claim")
        raw = claims.get(cfg.role_claim)
        values = (
            [raw]
            if isinstance(raw, str)
            else [v for v in raw if isinstance(v, str)]
            if isinstance(raw, list)
            else []
        )
        named = {cfg.role_map.get(v, "") if cfg.role_map else v for v in values}
        role = next((r for r in _ROLE_ORDER if r.value in named), None)
        if role is None:
            raise OidcRejected(403, "forbidden", f"the token grants no admin role (claim {cfg.role_claim})")
        if role is Role.OWNER:
            return Principal(f"oidc:{sub}", role, None)
        tenant = claims.get(cfg.tenant_claim)
        # Only an absent claim means every tenant (a global viewer). A claim that names no single
        # tenant (a list, a number, "", "*") is refused: read as "none" it would widen the scope.
        if tenant is not None and not (isinstance(tenant, str) and _TENANT.fullmatch(tenant)):
            raise OidcRejected(403, "forbidden", f"the {cfg.tenant_claim} claim is not a tenant name")
        if role is Role.TENANT_ADMIN and tenant is None:
            raise OidcRejected(403, "forbidden", f"a tenant_admin token needs the {cfg.tenant_claim} claim")
        return Principal(f"oidc:{sub}", role, tenant)

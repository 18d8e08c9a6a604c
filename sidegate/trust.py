"""Internal trust: Envoy proves to the Sidegate services that it is Envoy.

The services' ports hand out what no other local process may have (the per-try stage answers
with the provider's credential; authz says which tenant a key is), and in a Kubernetes pod every
container shares the loopback. So every call Envoy makes to them (ext_authz, both ext_proc phases,
the access-log stream, the HTTP front's checks, the try lane's calls, replays) carries a shared
secret in the `x-sidegate-internal-token` header (gRPC: metadata), and each service compares it in
constant time before doing anything else; a call without it gets UNAUTHENTICATED / an empty 503 and nothing
more. Only the gRPC health service answers without it (the probes carry no secret; it says
SERVING or not, nothing else).

Envoy does not hold the secret in its bootstrap: a `credential_injector` upstream filter on each
Sidegate cluster sets the header on every request to it (the gRPC streams and the HTTP calls alike),
reading the secret through file-based SDS from `services.internal_token_file` (an SDS resource
file, written by `sidegate internal-token`, by `sidegate up`, or by hand). The secret thus never
shows in the rendered bootstrap or Envoy's admin /config_dump, a new file is picked up by Envoy
without a restart, and the same filter works in an Istio sidecar (an EnvoyFilter cannot add a
static secret). The services read the secret from the environment variable
`services.internal_token_env` (default SIDEGATE_INTERNAL_TOKEN) or, when that is unset, from the
same file. `sidegate up` generates one per start; a standalone `sidegate serve` without one refuses
to start (fail closed).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import yaml

from sidegate.config import SidegateConfig
from sidegate.wire import INTERNAL_TOKEN_HEADER

SECRET_NAME = "sidegate-internal-token"
"""The SDS resource (in `services.internal_token_file`) the injector reads."""
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


class MissingToken(RuntimeError):
    """No internal token is configured: a service must not start without one."""


def generate() -> str:
    return secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (created so: never briefly world-readable), by a
    rename, so a reader (Envoy watches the token file) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)  # a file left over keeps its mode through O_CREAT
    os.replace(tmp, path)


def token_file_text(token: str) -> str:
    """The token file: an Envoy SDS resource (Envoy reads it as is; the services take the value)."""
    return yaml.safe_dump({"resources": [{"@type": _SECRET_TYPE, "name": SECRET_NAME,
                                          "generic_secret": {"secret": {"inline_string": token}}}]})  # fmt: skip


def read_token_file(path: str | Path) -> str:
    """The token in a file written by :func:`token_file_text` ("" if there is none)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
        for res in doc["resources"]:
            if res.get("name") == SECRET_NAME:
                return str(res["generic_secret"]["secret"]["inline_string"]).strip()
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        pass
    return ""


def load_token(cfg: SidegateConfig, env: Mapping[str, str] | None = None) -> str:
    """The secret from `services.internal_token_env`, else from `services.internal_token_file`."""
    env = os.environ if env is None else env
    svc = cfg.services
    token = env.get(svc.internal_token_env, "").strip()
    if not token and svc.internal_token_file:
        token = read_token_file(svc.internal_token_file)
    if len(token) < 16:
        where = f"the {svc.internal_token_env} environment variable or the file {svc.internal_token_file}"
        raise MissingToken(
            f"no internal token (at least 16 characters) in {where}: Envoy and the services share it "
            "(docs/deployment.md, 'Internal trust'; `sidegate internal-token -o FILE` writes one)"
        )
    return token


class Token:
    """The secret, compared in constant time (a mismatch's timing says nothing about the secret)."""

    __slots__ = ("_expected",)

    def __init__(self, token: str):
        if not token:
            raise MissingToken("empty internal token")
        self._expected = token.encode()

    @property
    def value(self) -> str:
        """For the services' own calls to each other (the try lane's abandon between workers)."""
        return self._expected.decode()

    def valid(self, presented: str | bytes | None) -> bool:
        if presented is None:
            return False
        if isinstance(presented, str):
            presented = presented.encode("latin-1", "replace")
        return hmac.compare_digest(presented, self._expected)

    def valid_metadata(self, metadata: Any) -> bool:
        """gRPC invocation metadata ((key, value) pairs) carries the secret."""
        for key, value in metadata or ():
            if key == INTERNAL_TOKEN_HEADER:
                return self.valid(value)
        return False

    def __repr__(self) -> str:  # never the secret itself in a log line or a traceback
        return "Token(<redacted>)"


async def require(token: Token, context: grpc.aio.ServicerContext) -> None:
    """First thing of every Sidegate RPC handler: a call without the secret ends here with
    UNAUTHENTICATED and no details. (A check in the handler rather than a server interceptor:
    grpc.aio's interceptor path cost ~80-160 µs of CPU per RPC, this ~1 µs; see docs/architecture.md.)"""
    if not token.valid_metadata(context.invocation_metadata()):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "")


# -- Envoy side (rendered into the bootstrap by sidegate/bootstrap/clusters.py and render.py) -----------


def injector(path: str) -> dict[str, Any]:
    """Cluster-level upstream filter of each Sidegate service cluster: every request Envoy sends
    there carries the secret, read from the SDS file `path` (which must exist when Envoy starts;
    Envoy re-reads it when it is replaced)."""
    sds = {"name": SECRET_NAME, "sds_config": {"path_config_source": {"path": path}, "resource_api_version": "V3"}}
    generic = {"@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
               "credential": sds, "header": INTERNAL_TOKEN_HEADER}  # fmt: skip
    return {
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": True,  # a client's own header of that name (a replay route) is replaced
            "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": generic},
        },
    }


NODE = {"id": "sidegate", "cluster": "sidegate"}
"""Envoy's node identity: file-based SDS needs one (an Istio sidecar has its own)."""

"""`TokenIssuer`: fake cloud token endpoints that check what they receive, for the Vertex AI and
Azure OpenAI fakes to accept only the tokens they minted (``FakeProvider(token_check=issuer.valid)``).

On one port (a small threaded HTTP server: google-auth and azure-identity call it from their own
threads, synchronously):

- Google's OAuth2 token endpoint, `POST /token` (a service account key file's `token_uri`):
  `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`; the assertion's RS256 signature is
  verified with the registered service account's public key, and its `iss`, `aud` (Google's token endpoint, as google-auth asserts it),
  `scope` and `exp`; a bad one gets Google's `400 {"error": "invalid_grant", ...}`.
- The GCE metadata server (Application Default Credentials on GKE/GCE: `GCE_METADATA_HOST` and
  `GCE_METADATA_IP` point here): `GET /` (the presence ping), `.../service-accounts/default/`
  (`?recursive=true`: email, scopes) and `.../service-accounts/default/token` (or by email), each requiring
  `Metadata-Flavor: Google`.
- Azure's App Service managed identity endpoint (`IDENTITY_ENDPOINT` = `<url>/msi/token`,
  `IDENTITY_HEADER`): `GET ?resource=...&api-version=2019-08-01` with `X-IDENTITY-HEADER`,
  answering `access_token` and `expires_on` (epoch seconds) as azure-identity (MSAL) reads them.

Tokens are opaque random strings valid `expires_in` seconds (settable while running).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
COGNITIVE_RESOURCE = "https://cognitiveservices.azure.com"
_METADATA_PREFIX = "/computeMetadata/v1/"
MSI_PATH = "/msi/token"


@dataclass(frozen=True, slots=True)
class Issued:
    token: str
    kind: str  # "google-sa", "google-metadata", "azure-mi"
    subject: str  # the service account email, or the managed identity's resource
    expires_at: float


class TokenIssuer:
    """Fake Google and Azure token endpoints; ``valid(token)`` says whether a token is one of its
    own and not expired (thread-safe: the fake providers call it from their event loop thread)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, expires_in: int = 3600,
                 metadata_email: str = "default-sa@fake-project.iam.gserviceaccount.com",
                 identity_header: str = "fake-identity-header", azure_resource: str = COGNITIVE_RESOURCE) -> None:  # fmt: skip
        self.host = host
        self._port = port
        self.expires_in = expires_in
        self.metadata_email = metadata_email
        self.identity_header = identity_header
        self.azure_resource = azure_resource
        self._accounts: dict[str, bytes] = {}  # service account email -> public key PEM
        self._tokens: dict[str, Issued] = {}
        self._lock = threading.Lock()
        self.refused: list[str] = []  # why each refused token request was refused
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> TokenIssuer:
        issuer = self

        class Handler(_Handler):
            owner = issuer

        self._server = ThreadingHTTPServer((self.host, self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-token-issuer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TokenIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def token_uri(self) -> str:
        """Google's token endpoint here (a service account key file's `token_uri`)."""
        return self.url + "/token"

    @property
    def metadata_host(self) -> str:
        """`GCE_METADATA_HOST` / `GCE_METADATA_IP` for google-auth."""
        return f"{self.host}:{self._port}"

    @property
    def identity_endpoint(self) -> str:
        """`IDENTITY_ENDPOINT` for azure-identity (App Service managed identity)."""
        return self.url + MSI_PATH

    # -- control -------------------------------------------------------------------------------
    def add_service_account(self, email: str, public_key_pem: bytes) -> None:
        self._accounts[email] = public_key_pem

    def valid(self, token: str) -> bool:
        issued = self._tokens.get(token)
        return issued is not None and issued.expires_at > time.time()

    def issued(self, kind: str | None = None) -> list[Issued]:
        with self._lock:
            return [i for i in self._tokens.values() if kind is None or i.kind == kind]

    def expired(self, kind: str | None = None) -> list[Issued]:
        now = time.time()
        return [i for i in self.issued(kind) if i.expires_at <= now]

    def _issue(self, kind: str, subject: str) -> Issued:
        prefix = "ya29." if kind.startswith("google") else "eyJ0eXAiOiJKV1Qi."
        issued = Issued(prefix + secrets.token_urlsafe(32), kind, subject, time.time() + self.expires_in)
        with self._lock:
            self._tokens[issued.token] = issued
        return issued

    def _refuse(self, why: str) -> None:
        with self._lock:
            self.refused.append(why)

    # -- endpoints (called on the server's threads) ----------------------------------------------
    def google_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Google's jwt-bearer grant: the assertion verified as Google does before issuing."""
        from google.auth import jwt

        if form.get("grant_type") != JWT_BEARER:
            self._refuse("grant_type")
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}
        assertion = form.get("assertion", "")
        try:
            claims = jwt.decode(assertion, verify=False)
            email = str(claims.get("iss", ""))
            key = self._accounts.get(email)
            if key is None:
                self._refuse("unknown account")
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid grant: account not found",
                }
            # RS256 signature, iat/exp, and the audience google-auth asserts (Google's endpoint, or this one)
            claims = jwt.decode(assertion, certs=key, audience=[GOOGLE_TOKEN_AUDIENCE, self.token_uri])
        except ValueError:
            self._refuse("signature")
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        scopes = str(claims.get("scope", "")).split()
        if CLOUD_PLATFORM not in scopes:
            self._refuse("scope")
            return 400, {
                "error": "invalid_scope",
                "error_description": "Invalid OAuth scope or ID token audience provided.",
            }
        if float(claims.get("exp", 0)) - float(claims.get("iat", 0)) > 3600:
            self._refuse("lifetime")
            return 400, {
                "error": "invalid_grant",
                "error_description": "Invalid JWT: Token must be a short-lived token (60 minutes).",
            }
        issued = self._issue("google-sa", email)
        return 200, {"access_token": issued.token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def metadata(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        # The instance's account, by alias or by email (google-auth uses the email once it knows it).
        accounts = [
            _METADATA_PREFIX + f"instance/service-accounts/{a}/" for a in ("default", self.metadata_email)
        ]
        if path in accounts and query.get("recursive") == "true":
            return 200, {"aliases": ["default"], "email": self.metadata_email, "scopes": [CLOUD_PLATFORM]}
        if path in [a + "token" for a in accounts]:
            scopes = query.get("scopes", CLOUD_PLATFORM).split(",")
            if CLOUD_PLATFORM not in scopes:
                self._refuse("scope")
                return 400, "scope not granted"
            issued = self._issue("google-metadata", self.metadata_email)
            return 200, {"access_token": issued.token, "expires_in": self.expires_in, "token_type": "Bearer"}
        if path == _METADATA_PREFIX + "project/project-id":
            return 200, "fake-project"
        if path == _METADATA_PREFIX + "universe/universe-domain":
            return 200, "googleapis.com"
        return 404, "not found"

    def managed_identity(self, query: dict[str, str], header: str | None) -> tuple[int, dict[str, Any]]:
        if header != self.identity_header:
            self._refuse("identity header")
            return 401, {"statusCode": 401, "message": "Unauthorized"}
        if query.get("api-version") != "2019-08-01":
            self._refuse("api-version")
            return 400, {"statusCode": 400, "message": "Unsupported api-version"}
        resource = query.get("resource", "")
        if resource.rstrip("/") != self.azure_resource:
            self._refuse("resource")
            return 400, {"statusCode": 400, "message": f"Resource {resource!r} is not granted"}
        issued = self._issue("azure-mi", resource)
        return 200, {"access_token": issued.token, "expires_on": str(int(issued.expires_at)),
                     "resource": resource, "token_type": "Bearer", "client_id": query.get("client_id", "fake-client")}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    owner: TokenIssuer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the issuer's state, not its log."""

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        text = isinstance(payload, str)
        body = payload.encode() if text else orjson.dumps(payload)
        self.send_response(status)
        self.send_header("content-type", "application/text" if text else "application/json")
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _query(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}

    def do_GET(self) -> None:
        path, query = self._query()
        if path == MSI_PATH:
            self._send(*self.owner.managed_identity(query, self.headers.get("X-IDENTITY-HEADER")))
            return
        flavor = {"Metadata-Flavor": "Google"}
        if self.headers.get("Metadata-Flavor") != "Google":
            self._send(403, "Missing required header: Metadata-Flavor", flavor)
            return
        if path == "/":  # google-auth's presence ping
            self._send(200, "computeMetadata/", flavor)
            return
        self._send(*self.owner.metadata(path, query), flavor)

    def do_POST(self) -> None:
        path, _ = self._query()
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        if path != "/token":
            self._send(404, {"error": "not_found"})
            return
        form = {k: v[-1] for k, v in parse_qs(raw).items()}
        self._send(*self.owner.google_token(form))


def service_account_file(path: str, email: str, token_uri: str, project: str = "fake-project") -> bytes:
    """Writes a real service account key file (a fresh RSA key, `token_uri` pointing at a fake)
    to `path`; returns the public key PEM, for :meth:`TokenIssuer.add_service_account`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = {
        "type": "service_account", "project_id": project, "private_key_id": secrets.token_hex(20),
        "private_key": private.decode(), "client_email": email, "client_id": "1" + secrets.token_hex(10),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
    }  # fmt: skip
    with open(path, "wb") as f:
        f.write(orjson.dumps(info))
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bearer_refusal(path: str, headers: dict[str, str], check: Any) -> bytes | None:
    """The provider's 401 body when a Vertex AI (`/v1/projects/...`) or Azure OpenAI (`/openai/...`)
    request does not carry a currently valid bearer token of `check`'s issuer; None when it does,
    or when the path is neither."""
    vertex = path.startswith("/v1/projects/")
    if not vertex and not path.startswith("/openai/"):
        return None
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer ") and check(auth[7:]):
        return None
    if vertex:
        message = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                   "or other valid authentication credential.")  # fmt: skip
        return orjson.dumps({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}})
    message = ("Unauthorized. Access token is missing, invalid, audience is incorrect "
               "(https://cognitiveservices.azure.com), or have expired.")  # fmt: skip
    return orjson.dumps({"error": {"code": "401", "message": message}})

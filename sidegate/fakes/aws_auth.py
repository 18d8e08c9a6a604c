"""The Bedrock fake's SigV4 check: the signature recomputed with botocore over what was received.

As AWS does it: the `authorization` header's credential scope names a known access key id, the
date is within 5 minutes, the scope's region and service are the endpoint's, and the signature over
the received method, raw path, query, signed headers and body's SHA-256, computed with the key's
secret, equals the one sent. A gateway that signs one path and sends another (an encoded `:` in a
model id), or signs a body it then changes, gets AWS's 403.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from typing import NamedTuple

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

__all__ = ["AuthFailure", "verify"]

MAX_SKEW = dt.timedelta(minutes=5)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;_-]+),\s*Signature=(?P<sig>[0-9a-f]{64})$"
)
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)


class AuthFailure(NamedTuple):
    """AWS's answer to a request it does not accept: 403, `x-amzn-errortype`, `{"message"}`."""

    error_type: str
    message: str


def verify(
    method: str,
    raw_path: str,
    headers: dict[str, str],
    body: bytes,
    keys: dict[str, str | tuple[str, str]],
    region: str,
    service: str = "bedrock",
    now: dt.datetime | None = None,
) -> AuthFailure | None:
    """None when the request is signed by one of `keys` (access key id -> secret, or (secret,
    session token) for temporary credentials); else why not. `headers` lower-cased."""
    auth = headers.get("authorization")
    if not auth:
        return AuthFailure("MissingAuthenticationTokenException", "Missing Authentication Token")
    m = _AUTH.match(auth.strip())
    if m is None:
        return AuthFailure("IncompleteSignatureException", f"Authorization header requires 'Credential', 'Signature' "
                           f"and 'SignedHeaders' parameters in the AWS4-HMAC-SHA256 form. Authorization={auth.split(' ')[0]}")  # fmt: skip
    entry = keys.get(m["akid"])
    if entry is None:
        return AuthFailure(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    secret, token = (entry, None) if isinstance(entry, str) else entry
    if token is not None and headers.get("x-amz-security-token") != token:
        return AuthFailure(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    stamp = headers.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return AuthFailure("IncompleteSignatureException", "Authorization header requires existence of either a "
                           "'X-Amz-Date' or a 'Date' header.")  # fmt: skip
    now = now or dt.datetime.now(dt.UTC)
    if abs(now - when) > MAX_SKEW:
        fmt = SIGV4_TIMESTAMP
        return AuthFailure("InvalidSignatureException", f"Signature expired: {stamp} is now earlier than "
                           f"{(now - MAX_SKEW).strftime(fmt)} ({now.strftime(fmt)} - 5 min.)")  # fmt: skip
    if m["date"] != stamp[:8] or m["region"] != region or m["service"] != service:
        return AuthFailure("InvalidSignatureException", f"Credential should be scoped to a valid region and "
                           f"service: '{region}', '{service}'.")  # fmt: skip
    signed = m["signed"].split(";")
    if "host" not in signed or any(h not in headers for h in signed):
        return AuthFailure("InvalidSignatureException", MISMATCH)
    req = AWSRequest(method=method, url=f"https://{headers['host']}{raw_path}", data=body,
                     headers={h: headers[h] for h in signed})  # fmt: skip
    req.context["timestamp"] = stamp
    signer = SigV4Auth(ReadOnlyCredentials(m["akid"], secret, token), service, region)
    expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    if not hmac.compare_digest(expected, m["sig"]):
        return AuthFailure("InvalidSignatureException", MISMATCH)
    return None

"""AWS SigV4 (sidegate/credentials/aws.py): the region, the chain read off the request path, the
signature the Bedrock fake's verifier (botocore over what was received) accepts, rotation, scrubbing,
and Bedrock API keys as bearer keys."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from botocore.credentials import RefreshableCredentials

from sidegate import config
from sidegate.config import ConfigError, ProviderConfig
from sidegate.config.clouds import bedrock_region
from sidegate.core.tries import TryStage
from sidegate.credentials import SigningCredential, for_provider
from sidegate.credentials.aws import SigV4
from sidegate.credentials.base import RefreshingCredential
from sidegate.credentials.bearer import BearerKey
from sidegate.fakes.aws_auth import AuthFailure, verify

AKID, SECRET = "AKIDEXAMPLEFIRST0001", "first/secret+EXAMPLE0000000000000000001"
AKID2, SECRET2 = "AKIDEXAMPLESECOND002", "second/secret+EXAMPLE000000000000000002"
TOKEN = "session-token-EXAMPLE-" + "x" * 40
PATH = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'


def run_async(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """An async test run on its own event loop (the fixtures reach it through the signature)."""

    @functools.wraps(fn)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


def _cfg(**provider: object) -> config.SidegateConfig:
    return config.parse(
        {
            "providers": {"bedrock": {"api": "bedrock", **provider}},
            "models": {"m": {"routes": [{"provider": "bedrock"}]}},
        },
        env={},
    )


def _provider(**fields: object) -> ProviderConfig:
    return _cfg(**{"base_url": "https://bedrock-runtime.us-west-2.amazonaws.com", **fields}).providers[
        "bedrock"
    ]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An isolated AWS chain: no environment keys, no ~/.aws, no metadata server lookups; the
    shared credentials file is the returned path."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    creds = tmp_path / "credentials"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return creds


def _write(path: Path, akid: str, secret: str, profile: str = "default") -> None:
    path.write_text(f"[{profile}]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n")


def _received(
    signed: dict[str, str], authority: str = "bedrock-runtime.us-west-2.amazonaws.com"
) -> dict[str, str]:
    """The headers as the provider receives them: the try's, the signature's, `host`."""
    return {"content-type": "application/json", "host": authority, **signed}


def _verify_signed(cred: SigV4, keys: dict[str, str | tuple[str, str]]) -> AuthFailure | None:
    """What the fake Bedrock's check says (None: accepted) of ``cred``'s signature of the test
    request to the us-west-2 endpoint, given the keys it knows."""
    host = "bedrock-runtime.us-west-2.amazonaws.com"
    out = cred.sign("POST", host, PATH, {}, BODY)
    return verify("POST", PATH, {"host": host, **out}, BODY, keys, "us-west-2")


def test_region_from_host_or_config() -> None:
    assert bedrock_region("bedrock-runtime.us-east-1.amazonaws.com") == "us-east-1"
    assert bedrock_region("bedrock-runtime-fips.us-gov-west-1.amazonaws.com") == "us-gov-west-1"
    assert bedrock_region("bedrock-runtime.cn-north-1.amazonaws.com.cn") == "cn-north-1"
    assert bedrock_region("vpce-0abc-xyz.bedrock-runtime.eu-west-3.vpce.amazonaws.com") is None
    assert bedrock_region("127.0.0.1") is None
    assert SigV4(_provider()).region == "us-west-2"
    assert SigV4(_provider(aws={"region": "eu-central-1"})).region == "eu-central-1"


def test_no_region_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="signing region"):
        _cfg(base_url="http://127.0.0.1:9999")
    # A Bedrock API key needs no region.
    assert _cfg(base_url="http://127.0.0.1:9999", auth="bearer", api_key_env="BR_KEY").providers["bedrock"]


@run_async
async def test_signature_verifies_and_carries_the_session_token(monkeypatch, aws_env: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AKID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    cred = SigV4(_provider())
    assert isinstance(cred, SigningCredential) and isinstance(cred, RefreshingCredential)
    assert cred.sign("POST", "h", PATH, {}, BODY) == {}  # nothing read yet: unsigned
    changed: list[int] = []
    await cred.start(lambda: changed.append(1))
    try:
        assert changed == [1] and set(cred.secrets) == {SECRET, TOKEN} and AKID not in cred.secrets
        out = cred.sign("POST", "bedrock-runtime.us-west-2.amazonaws.com", PATH,
                        {":path": PATH, "content-length": str(len(BODY)), "content-type": "application/json"}, BODY)  # fmt: skip
        assert set(out) == {"authorization", "x-amz-date", "x-amz-security-token"}
        assert out["x-amz-security-token"] == TOKEN
        assert (
            f"Credential={AKID}/" in out["authorization"]
            and "/us-west-2/bedrock/aws4_request" in out["authorization"]
        )
        assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token," in out["authorization"]
        keys = {AKID: (SECRET, TOKEN)}
        assert verify("POST", PATH, _received(out), BODY, keys, "us-west-2") is None
        # Another body, path, host, secret, date or token: refused.
        assert (
            verify("POST", PATH, _received(out), BODY + b" ", keys, "us-west-2").error_type
            == "InvalidSignatureException"
        )
        bad_path = PATH.replace("%3A", ":")
        assert (
            verify("POST", bad_path, _received(out), BODY, keys, "us-west-2").error_type
            == "InvalidSignatureException"
        )
        assert verify("POST", PATH, _received(out, "other.host"), BODY, keys, "us-west-2") is not None
        assert (
            verify("POST", PATH, _received(out), BODY, {AKID: (SECRET2, TOKEN)}, "us-west-2").error_type
            == "InvalidSignatureException"
        )
        assert (
            verify("POST", PATH, _received(out), BODY, {AKID2: SECRET}, "us-west-2").error_type
            == "UnrecognizedClientException"
        )
        assert (
            verify("POST", PATH, _received(out), BODY, {AKID: (SECRET, "other")}, "us-west-2").error_type
            == "UnrecognizedClientException"
        )
        assert (
            verify("POST", PATH, _received(out), BODY, keys, "us-east-1").error_type
            == "InvalidSignatureException"
        )
        late = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
        expired = verify("POST", PATH, _received(out), BODY, keys, "us-west-2", now=late)
        assert expired is not None and expired.message.startswith("Signature expired")
        assert (
            verify("POST", PATH, {"host": "h"}, BODY, keys, "us-west-2").error_type
            == "MissingAuthenticationTokenException"
        )
    finally:
        await cred.close()


@run_async
async def test_sign_over_http_loopback_authority_with_a_port(monkeypatch, aws_env: Path) -> None:
    """The fake is plain http on loopback: the signature is over `https://<authority><path>` and the
    `host` header Envoy sends (with the port), which is what the fake recomputes."""
    _write(aws_env, AKID, SECRET)
    cred = SigV4(_provider(base_url="http://127.0.0.1:8123", aws={"region": "us-east-1"}))
    await cred.start(lambda: None)
    try:
        out = cred.sign("POST", "127.0.0.1:8123", PATH + "?a=b", {"content-type": "application/json"}, BODY)
        assert "x-amz-security-token" not in out and cred.secrets == (SECRET,)
        assert (
            verify("POST", PATH + "?a=b", _received(out, "127.0.0.1:8123"), BODY, {AKID: SECRET}, "us-east-1")
            is None
        )
    finally:
        await cred.close()


@run_async
async def test_rotated_file_keys_take_effect_off_the_request_path(aws_env: Path) -> None:
    _write(aws_env, AKID, SECRET)
    cred = SigV4(_provider(aws={"refresh_s": 0.05}))
    changes: list[tuple[str, ...]] = []
    await cred.start(lambda: changes.append(cred.secrets))
    try:
        assert cred.access_key_id == AKID and changes == [(SECRET,)]
        _write(aws_env, AKID2, SECRET2)
        for _ in range(100):
            if cred.access_key_id == AKID2:
                break
            await asyncio.sleep(0.02)
        assert cred.access_key_id == AKID2 and changes[-1] == (SECRET2,) and len(changes) == 2
        assert _verify_signed(cred, {AKID2: SECRET2}) is None
    finally:
        await cred.close()


@run_async
async def test_named_profile(aws_env: Path) -> None:
    _write(aws_env, AKID2, SECRET2, profile="bedrock")
    cred = SigV4(_provider(aws={"profile": "bedrock"}))
    await cred.start(lambda: None)
    try:
        assert cred.access_key_id == AKID2
    finally:
        await cred.close()


@run_async
async def test_no_credentials_logged_and_retried_in_the_background(aws_env: Path, caplog) -> None:
    cred = SigV4(_provider(aws={"refresh_s": 0.05}))
    await cred.start(lambda: None)
    try:
        assert cred.access_key_id is None and cred.sign("POST", "h", PATH, {}, BODY) == {}
        assert "no AWS credentials found" in caplog.text
        await asyncio.sleep(0.3)  # several retries, the same failure: one warning
        warnings = [
            r for r in caplog.records if r.levelname == "WARNING" and "no AWS credentials" in r.getMessage()
        ]
        assert len(warnings) == 1 and "tries go unsigned" in warnings[0].getMessage()
        _write(aws_env, AKID, SECRET)  # appears later: picked up without a restart
        for _ in range(100):
            if cred.access_key_id:
                break
            await asyncio.sleep(0.02)
        assert cred.access_key_id == AKID
    finally:
        await cred.close()


@run_async
async def test_refreshable_credentials_refreshed_by_the_task(monkeypatch, aws_env: Path) -> None:
    """Assumed-role / web-identity / metadata credentials: botocore refreshes them near expiry; the
    task asks it to, and the new frozen copy (with its new token) is what signs."""
    calls: list[int] = []

    def fetch() -> dict[str, str]:
        calls.append(1)
        n = len(calls)
        # Each set expires within botocore's refresh window: every read refreshes.
        expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
        return {
            "access_key": f"ASIAEXAMPLE{n:09d}",
            "secret_key": f"{SECRET}{n}",
            "token": f"{TOKEN}{n}",
            "expiry_time": expiry,
        }

    refreshable = RefreshableCredentials.create_from_metadata(fetch(), fetch, "test")
    monkeypatch.setattr("botocore.session.Session.get_credentials", lambda self: refreshable)
    cred = SigV4(_provider(aws={"refresh_s": 0.05}))
    await cred.start(lambda: None)
    try:
        first = cred.access_key_id
        for _ in range(100):
            if cred.access_key_id != first:
                break
            await asyncio.sleep(0.02)
        assert cred.access_key_id != first
        n = int(cred.access_key_id[-9:])
        assert cred.secrets == (f"{SECRET}{n}", f"{TOKEN}{n}")
        assert cred.sign("POST", "h", PATH, {}, BODY)["x-amz-security-token"] == f"{TOKEN}{n}"
    finally:
        await cred.close()


def test_try_stage_signs_bedrock_and_bearer_api_keys(monkeypatch, aws_env: Path) -> None:
    monkeypatch.setenv("BR_KEY", "bedrock-api-key-EXAMPLE-000001")
    cfg = config.parse(
        {
            "providers": {
                "sigv4": {"api": "bedrock", "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com"},
                "apikey": {"api": "bedrock", "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com",
                           "auth": "bearer", "api_key_env": "BR_KEY"},
            },
            "models": {"m": {"routes": [{"provider": "sigv4"}, {"provider": "apikey"}]}},
        },
        env={},
    )  # fmt: skip
    stage = TryStage(cfg)
    assert set(stage.signers) == {"sigv4"}
    key = for_provider(cfg.providers["apikey"])
    assert isinstance(key, BearerKey) and not isinstance(key, SigningCredential)
    headers: dict[str, str] = {}
    key.apply(headers)
    assert headers == {"authorization": "Bearer bedrock-api-key-EXAMPLE-000001"}
    assert "bedrock-api-key-EXAMPLE-000001" in stage.secret_strs


class _FakeSts(BaseHTTPRequestHandler):
    """STS's AssumeRoleWithWebIdentity, as botocore's web identity provider (IRSA) calls it."""

    token = ""
    calls: list[dict[str, list[str]]] = []

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["content-length"])).decode())
        type(self).calls.append(form)
        ok = form.get("Action") == ["AssumeRoleWithWebIdentity"] and form.get("WebIdentityToken") == [
            self.token
        ]
        expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = (
            '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleWithWebIdentityResult><Credentials>"
            f"<AccessKeyId>ASIAIRSAEXAMPLE00001</AccessKeyId><SecretAccessKey>{SECRET2}</SecretAccessKey>"
            f"<SessionToken>{TOKEN}</SessionToken><Expiration>{expiry}</Expiration>"
            "</Credentials><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/bedrock/pod</Arn>"
            "<AssumedRoleId>AROAEXAMPLE:pod</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult>"
            "<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000001</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        ).encode()
        self.send_response(200 if ok else 400)
        self.send_header("content-type", "text/xml")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@run_async
async def test_irsa_web_identity_through_sts(monkeypatch, aws_env: Path, tmp_path: Path) -> None:
    """EKS IRSA: a role ARN and a projected service-account token file in the environment; botocore
    exchanges the token at STS (a local fake here) for temporary credentials that sign with their
    session token."""
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.service-account-token.sig")
    _FakeSts.token, _FakeSts.calls = token_file.read_text(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/bedrock")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    cred = SigV4(_provider())
    try:
        await cred.start(lambda: None)
        assert cred.access_key_id == "ASIAIRSAEXAMPLE00001" and set(cred.secrets) == {SECRET2, TOKEN}
        assert _FakeSts.calls[0]["RoleArn"] == ["arn:aws:iam::123456789012:role/bedrock"]
        assert _verify_signed(cred, {"ASIAIRSAEXAMPLE00001": (SECRET2, TOKEN)}) is None
    finally:
        await cred.close()
        server.shutdown()
        server.server_close()

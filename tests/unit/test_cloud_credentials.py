"""Cloud token schemes (sidegate/credentials/google.py, azure.py, refreshing.py) against the fake
token endpoints (sidegate/fakes/tokens.py), and Anthropic on Vertex AI in the per-try stage."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import orjson
import pytest

from sidegate import config
from sidegate.core.tries import TryStage
from sidegate.credentials import RefreshingCredential, for_provider
from sidegate.credentials.azure import EntraToken
from sidegate.credentials.env import env_credential
from sidegate.credentials.google import GoogleToken
from sidegate.credentials.refreshing import RefreshingToken, describe
from sidegate.errors import Api
from sidegate.fakes.tokens import JWT_BEARER, TokenIssuer, bearer_refusal, service_account_file
from sidegate.fakes.vertex_anthropic import messages_body, vertex_anthropic
from sidegate.lanes import preparable_first_try
from sidegate.translate import get_translator
from sidegate.translate.base import TranslateOptions

EMAIL = "unit@fake-project.iam.gserviceaccount.com"
VERTEX = {"project": "fake-project", "location": "us-east5"}


@pytest.fixture
def issuer():
    with TokenIssuer(expires_in=3600) as tokens:
        yield tokens


def _cfg(**providers: dict) -> config.SidegateConfig:
    return config.parse(
        {"providers": providers, "models": {n: {"routes": [{"provider": n}]} for n in providers}}, env={}
    )


async def _until(done, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert done()


class Scripted(RefreshingToken):
    """A token scheme whose fetches are scripted (tokens, or exceptions to raise)."""

    def __init__(self, results: list, margin: float = 0.0) -> None:
        super().__init__("scripted", margin)
        self.results = results

    def fetch(self) -> tuple[str, float]:
        item = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(item, BaseException):
            raise item
        return item


def test_a_token_is_applied_from_an_attribute_and_kept_in_secrets_until_it_expires():
    async def run() -> None:
        now = time.time()
        cred = Scripted([("token-one-0123456789", now + 5), ("token-two-0123456789", now + 60)], margin=4.5)
        changes = []
        assert isinstance(cred, RefreshingCredential)
        await cred.start(lambda: changes.append(cred.secrets))
        headers: dict[str, str] = {}
        cred.apply(headers)
        assert headers == {"authorization": "Bearer token-one-0123456789"}
        await _until(lambda: cred.fetches == 2)  # refreshed MIN_REFRESH_S later
        cred.apply(headers)
        assert headers == {"authorization": "Bearer token-two-0123456789"}
        assert changes[0] == ("token-one-0123456789",)
        assert changes[1] == (
            "token-one-0123456789",
            "token-two-0123456789",
        )  # the previous, until it expires
        await cred.close()
        assert cred._task is None

    asyncio.run(run())


def test_a_failed_fetch_is_logged_without_the_secret_and_retried(caplog):
    async def run() -> None:
        cred = Scripted([RuntimeError("backend down"), ("token-after-retry-0123", time.time() + 60)])
        with caplog.at_level(logging.WARNING, "sidegate.credentials"):
            await cred.start(lambda: None)
        headers: dict[str, str] = {}
        cred.apply(headers)
        assert headers == {}  # no token yet: the try goes without (401 -> the gateway's 502)
        await _until(lambda: cred.fetches == 1)  # retried after the first backoff
        cred.apply(headers)
        assert headers == {"authorization": "Bearer token-after-retry-0123"} and cred.failures == 1
        await cred.close()

    asyncio.run(run())
    assert "token fetch failed (RuntimeError: backend down)" in caplog.text
    assert "token-after-retry" not in caplog.text


def test_describe_unwraps_sdk_exceptions():
    inner = OSError("connection refused")
    assert describe(RuntimeError(inner)) == "RuntimeError: OSError: connection refused"
    assert describe(ValueError()) == "ValueError"


def test_next_refresh_is_the_margin_before_expiry_but_never_a_busy_loop():
    cred = Scripted([("t" * 10, 0.0)], margin=300)
    now = time.time()
    assert 3299 < cred.next_refresh_in(now + 3600) <= 3300
    assert cred.next_refresh_in(now + 200) == pytest.approx(
        20, abs=0.5
    )  # an SDK's cached token, near its end
    assert cred.next_refresh_in(now) == 1.0


def test_google_service_account_token_from_the_fake_endpoint(issuer, tmp_path: Path):
    good, bad = tmp_path / "sa.json", tmp_path / "bad.json"
    issuer.add_service_account(EMAIL, service_account_file(str(good), EMAIL, issuer.token_uri))
    service_account_file(str(bad), EMAIL, issuer.token_uri)
    cfg = _cfg(good={"api": "anthropic", "base_url": "https://vertex.test", "vertex": VERTEX,
                     "google": {"credentials_file": str(good)}},
               bad={"api": "anthropic", "base_url": "https://vertex.test", "vertex": VERTEX,
                    "google": {"credentials_file": str(bad)}})  # fmt: skip
    cred = for_provider(cfg.providers["good"], "good")
    assert isinstance(cred, GoogleToken)
    token, expires_at = cred.fetch()
    assert issuer.valid(token) and token.startswith("ya29.") and 3500 < expires_at - time.time() <= 3600
    with pytest.raises(Exception, match="invalid_grant"):
        for_provider(cfg.providers["bad"]).fetch()  # type: ignore[union-attr]
    assert issuer.refused == ["signature"] and not issuer.valid("ya29.made-up-token")


def test_entra_id_token_from_the_fake_managed_identity(issuer, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", issuer.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", issuer.identity_header)
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    cfg = _cfg(azure={"api": "openai", "base_url": "https://azure.test", "auth": "azure-ad",
                      "path_prefix": "/openai/deployments/{model}"})  # fmt: skip
    cred = for_provider(cfg.providers["azure"], "azure")
    assert isinstance(cred, EntraToken)
    token, expires_at = cred.fetch()
    assert issuer.valid(token) and expires_at > time.time() + 3000
    assert issuer.issued("azure-mi")[0].subject == "https://cognitiveservices.azure.com"
    monkeypatch.setenv("IDENTITY_HEADER", "a-wrong-header")
    with pytest.raises(Exception):  # noqa: B017 - azure-identity's own error type
        EntraToken(cfg.providers["azure"]).fetch()
    assert issuer.refused == ["identity header"]


def test_fake_token_endpoints_check_what_they_receive(issuer):
    bad = httpx.post(issuer.token_uri, data={"grant_type": "client_credentials"})
    assert bad.status_code == 400 and bad.json()["error"] == "unsupported_grant_type"
    garbage = httpx.post(issuer.token_uri, data={"grant_type": JWT_BEARER, "assertion": "not.a.jwt"})
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_grant"
    token_path = issuer.url + "/computeMetadata/v1/instance/service-accounts/default/token"
    assert httpx.get(token_path).status_code == 403  # no Metadata-Flavor
    meta = httpx.get(token_path, headers={"Metadata-Flavor": "Google"})
    assert meta.status_code == 200 and issuer.valid(meta.json()["access_token"])
    msi = httpx.get(issuer.identity_endpoint, params={"resource": "https://cognitiveservices.azure.com", "api-version": "2017-09-01"},
                    headers={"X-IDENTITY-HEADER": issuer.identity_header})  # fmt: skip
    assert msi.status_code == 400


def test_expired_tokens_are_no_longer_valid():
    with TokenIssuer(expires_in=0) as tokens:
        meta = httpx.get(tokens.url + "/computeMetadata/v1/instance/service-accounts/default/token",
                         headers={"Metadata-Flavor": "Google"})  # fmt: skip
        assert not tokens.valid(meta.json()["access_token"]) and tokens.expired()


def test_fake_provider_refuses_a_missing_or_foreign_bearer_on_cloud_paths():
    def check(token: str) -> bool:
        return token == "ya29.good-token"

    vertex = "/v1/projects/p/locations/l/publishers/anthropic/models/m:rawPredict"
    assert bearer_refusal(vertex, {"authorization": "Bearer ya29.good-token"}, check) is None
    refused = orjson.loads(bearer_refusal(vertex, {"authorization": "Bearer other"}, check) or b"")
    assert refused["error"]["status"] == "UNAUTHENTICATED"
    assert b"401" in (
        bearer_refusal("/openai/deployments/d/chat/completions", {"api-key": "k"}, check) or b""
    )
    assert bearer_refusal("/v1/chat/completions", {}, check) is None  # not a cloud path


def test_fake_vertex_anthropic_body_checks():
    model, stream = vertex_anthropic(
        "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x@1:streamRawPredict"
    ) or ("", False)
    assert (model, stream) == ("claude-x@1", True)
    ok = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": [], "stream": True}
    assert messages_body(ok, model, stream) == (
        {"max_tokens": 5, "messages": [], "stream": True, "model": "claude-x@1"},
        None,
    )
    assert "anthropic_version" in (messages_body({"max_tokens": 5}, model, stream)[1] or "")
    assert "model" in (messages_body({**ok, "model": "x"}, model, stream)[1] or "")
    assert "stream" in (messages_body({**ok, "stream": False}, model, stream)[1] or "")


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC])
def test_vertex_anthropic_body_carries_the_version_and_no_model(inbound):
    opts = TranslateOptions(anthropic_body_version="vertex-2023-10-16")
    body = {"model": "client-name", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    preq = get_translator(inbound, Api.ANTHROPIC).request(dict(body), model="claude-x", opts=opts)
    sent = orjson.loads(preq.body)
    assert sent["anthropic_version"] == "vertex-2023-10-16" and "model" not in sent and preq.headers == {}
    plain = get_translator(inbound, Api.ANTHROPIC).request(
        dict(body), model="claude-x", opts=TranslateOptions()
    )
    assert (
        orjson.loads(plain.body)["model"] == "claude-x" and plain.headers["anthropic-version"] == "2023-06-01"
    )


def test_per_try_stage_builds_the_vertex_anthropic_try():
    cfg = _cfg(
        vertex={
            "api": "anthropic",
            "base_url": "https://us-east5-aiplatform.googleapis.com",
            "vertex": VERTEX,
        }
    )
    stage = TryStage(cfg)
    cred = stage.credentials["vertex"]
    assert isinstance(cred, GoogleToken)
    cred._take("ya29.unit-token-0123456789", time.time() + 60)  # as a refresh would
    stage.refresh_secrets()
    meta = {"api": "anthropic", "model": "vertex", "stream": True, "anthropic_version": "2023-06-01"}
    t = stage.start_try(meta, "provider.vertex", 1)
    headers = t.request_headers().set
    assert headers["authorization"] == "Bearer ya29.unit-token-0123456789"
    body, changes = t.request_body(orjson.dumps({"model": "vertex", "max_tokens": 5, "stream": True,
                                                 "messages": [{"role": "user", "content": "hi"}]}))  # fmt: skip
    assert (
        changes.set[":path"]
        == "/v1/projects/fake-project/locations/us-east5/publishers/anthropic/models/vertex:streamRawPredict"
    )
    assert "anthropic-version" not in changes.set
    sent = orjson.loads(body)
    assert sent["anthropic_version"] == "vertex-2023-10-16" and "model" not in sent and sent["stream"] is True
    assert b"ya29.unit-token-0123456789" in stage.secrets


def test_a_replaced_service_account_key_file_is_read_again(issuer, tmp_path: Path):
    path = tmp_path / "sa.json"
    service_account_file(str(path), EMAIL, issuer.token_uri)  # a key the endpoint does not know
    cfg = _cfg(v={"api": "anthropic", "base_url": "https://vertex.test", "vertex": VERTEX,
                  "google": {"credentials_file": str(path)}})  # fmt: skip
    cred = GoogleToken(cfg.providers["v"])
    with pytest.raises(Exception, match="invalid_grant"):
        cred.fetch()
    issuer.add_service_account(EMAIL, service_account_file(str(path), EMAIL, issuer.token_uri))  # rotated
    assert issuer.valid(cred.fetch()[0])


@pytest.mark.parametrize(
    "fields",
    [
        {"api": "anthropic", "vertex": VERTEX},
        {"api": "openai", "auth": "azure-ad", "path_prefix": "/openai/deployments/{model}"},
    ],
)
def test_cloud_tokens_are_never_prepared_by_envoy(fields):
    """Envoy cannot set a token from its environment, and a try the front prepares at check time
    stays in the request's dynamic metadata: cloud providers' tries are always asked for."""
    cfg = _cfg(p={"base_url": "https://cloud.test", **fields})
    assert env_credential(cfg.providers["p"]) is None
    assert preparable_first_try(cfg, "p", 0) is None


def test_vertex_anthropic_token_count_is_one_endpoint_with_the_model_in_the_body():
    from sidegate.translate.count_tokens import AnthropicCountTokens

    p = _cfg(v={"api": "anthropic", "base_url": "https://vertex.test", "vertex": VERTEX}).providers["v"]
    assert p.provider_path("/v1/messages/count_tokens", "claude-x", False) == (
        "/v1/projects/fake-project/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
    )
    opts = TranslateOptions(anthropic_body_version="vertex-2023-10-16")
    preq = AnthropicCountTokens().request({"model": "m", "messages": []}, model="claude-x", opts=opts)
    assert orjson.loads(preq.body) == {
        "model": "claude-x",
        "messages": [],
        "anthropic_version": "vertex-2023-10-16",
    }
    assert preq.headers == {}


def test_entra_id_user_assigned_identity(issuer, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", issuer.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", issuer.identity_header)
    cfg = _cfg(azure={"api": "openai", "base_url": "https://azure.test", "auth": "azure-ad",
                      "azure": {"client_id": "00000000-1111-2222-3333-444444444444"}})  # fmt: skip
    token, _ = EntraToken(cfg.providers["azure"]).fetch()
    assert issuer.valid(token)


@pytest.mark.alone  # bounds a duration
def test_the_per_try_stage_starts_its_token_schemes_at_once():
    class Slow(Scripted):
        def fetch(self) -> tuple[str, float]:
            time.sleep(0.6)
            return super().fetch()

    stage = TryStage(_cfg(v={"api": "anthropic", "base_url": "https://vertex.test", "vertex": VERTEX}))
    stage.credentials = {n: Slow([(f"token-{n}-0123456789", time.time() + 60)]) for n in ("a", "b", "c")}

    async def run() -> float:
        started = time.monotonic()
        await stage.start()
        took = time.monotonic() - started
        await stage.close()
        return took

    assert asyncio.run(run()) < 1.5  # not 3 x 0.6 s
    assert set(stage.secret_strs) == {"token-a-0123456789", "token-b-0123456789", "token-c-0123456789"}

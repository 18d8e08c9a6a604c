"""The Bedrock fake (sidegate/fakes/bedrock.py, wire_bedrock.py) spoken to by boto3's own
bedrock-runtime client: its SigV4 signature verified for real, its Converse and ConverseStream
answers parsed by botocore (JSON and the binary event stream), its errors raised as botocore's
exceptions."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from sidegate.fakes import FakeProviderThread

AKID, SECRET = "AKIDFAKEBEDROCK00001", "fake/bedrock+secret000000000000000000001"
MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
PROFILE_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
)
MSG = [{"role": "user", "content": [{"text": "What is the weather in Paris?"}]}]
TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather", "inputSchema": {"json": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}]}  # fmt: skip
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    fp = FakeProviderThread(port=0, aws_keys={AKID: SECRET}, api_key="bedrock-api-key-EXAMPLE-01")
    fp.start()
    yield fp
    fp.stop()


@pytest.fixture(autouse=True)
def _reset(fake: FakeProviderThread) -> None:
    fake.reset()
    fake.provider.aws_keys = {AKID: SECRET}


def client(fake: FakeProviderThread, akid: str = AKID, secret: str = SECRET):
    return boto3.client(
        "bedrock-runtime", endpoint_url=fake.url, region_name="us-east-1", aws_access_key_id=akid,
        aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}, read_timeout=10),
    )  # fmt: skip


def test_converse_text_usage_and_wire(fake):
    r = client(fake).converse(
        modelId=MODEL, messages=MSG, system=[{"text": "Be terse."}], inferenceConfig={"maxTokens": 50}
    )
    assert r["output"]["message"]["content"] == [{"text": "Echo: What is the weather in Paris?"}]
    assert r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": 8, "outputTokens": 7, "totalTokens": 15}
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    rec = fake.requests[-1]
    assert rec.route == "converse" and rec.path == f"/model/{MODEL}/converse"
    assert rec.json["system"] == [{"text": "Be terse."}] and "modelId" not in rec.json


def test_converse_stream_events_and_scripted_usage(fake):
    fake.script([{"usage": {"input_tokens": 11, "output_tokens": 5, "cache_read_input_tokens": 3}}])
    r = client(fake).converse_stream(modelId=PROFILE_ARN, messages=MSG)
    events = list(r["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Echo: What is the weather in Paris?"
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": 11,
        "outputTokens": 5,
        "totalTokens": 16,
        "cacheReadInputTokens": 3,
    }
    assert r["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    assert fake.requests[-1].headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")


def test_tool_round_trip_and_image(fake):
    fake.script([{"tool_calls": "auto"}, {"tool_calls": "auto"}])
    r = client(fake).converse(modelId=MODEL, messages=MSG, toolConfig=TOOLS)
    use = r["output"]["message"]["content"][0]["toolUse"]
    assert (
        r["stopReason"] == "tool_use"
        and use["name"] == "get_weather"
        and use["input"] == {"city": "city-value"}
    )
    events = list(client(fake).converse_stream(modelId=MODEL, messages=MSG, toolConfig=TOOLS)["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "get_weather"
    args = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e
    )
    assert args == '{"city":"city-value"}'
    turns = [
        {"role": "user", "content": [{"text": "What is this?"}, {"image": {"format": "png", "source": {"bytes": PNG}}}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": use["toolUseId"], "name": "get_weather", "input": {"city": "Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "sunny"}]}}]},
    ]  # fmt: skip
    r = client(fake).converse(modelId=MODEL, messages=turns, toolConfig=TOOLS)
    assert r["output"]["message"]["content"] == [{"text": "Echo: sunny"}]
    assert (
        fake.requests[-1].json["messages"][0]["content"][1]["image"]["source"]["bytes"]
        == base64.b64encode(PNG).decode()
    )


@pytest.mark.parametrize(
    ("messages", "extra", "message"),
    [
        ([{"role": "assistant", "content": [{"text": "hi"}]}], {}, "must start with a user message"),
        ([*MSG, *MSG], {}, "must alternate"),
        ([{"role": "user", "content": [{"text": " "}]}], {}, "is blank"),
        ([*MSG, {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]},
          {"role": "user", "content": [{"text": "no result"}]}], {"toolConfig": TOOLS}, "Expected toolResult blocks at messages.2.content"),
        ([{"role": "user", "content": [{"toolResult": {"toolUseId": "t9", "content": [{"text": "x"}]}}]}], {"toolConfig": TOOLS}, "exceeds the number of toolUse"),
    ],
)  # fmt: skip
def test_conversation_rules(fake, messages, extra, message):
    with pytest.raises(ClientError) as exc:
        client(fake).converse(modelId=MODEL, messages=messages, **extra)
    assert exc.value.response["Error"]["Code"] == "ValidationException" and message in str(exc.value)


def _signed_post(fake, path: str, body: bytes) -> httpx.Response:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials

    host = fake.url.removeprefix("http://")
    req = AWSRequest(method="POST", url=f"https://{host}{path}", data=body,
                     headers={"host": host, "content-type": "application/json"})  # fmt: skip
    SigV4Auth(ReadOnlyCredentials(AKID, SECRET, None), "bedrock", "us-east-1").add_auth(req)
    return httpx.post(fake.url + path, content=body, headers=dict(req.headers.items()), timeout=10)


def test_body_checked_against_botocore_shape(fake):
    """What boto3 would refuse client-side, sent raw (signed): Bedrock's 400 ValidationException."""
    r = _signed_post(
        fake,
        "/model/m/converse",
        b'{"messages": [{"role": "robot", "content": [{"text": "x"}]}], "bogus": 1}',
    )
    assert r.status_code == 400 and r.headers["x-amzn-errortype"] == "ValidationException"
    assert "Unknown parameter" in r.json()["message"] and "bogus" in r.json()["message"]
    r = _signed_post(
        fake, "/model/m/converse", b'{"messages": [{"role": "robot", "content": [{"text": "x"}]}]}'
    )
    assert r.status_code == 400 and "enum value set: [user, assistant]" in r.json()["message"]
    r = _signed_post(
        fake,
        "/model/m/converse",
        b'{"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "!!"}}}]}]}',
    )
    assert r.status_code == 400 and "bytes" in r.json()["message"]
    r = _signed_post(fake, "/model/m/converse", b"{not json")
    assert r.status_code == 400 and r.headers["x-amzn-errortype"] == "SerializationException"
    assert _signed_post(fake, "/model/m/converse", b'{"messages": []}').status_code == 200


def test_signature_failures(fake):
    with pytest.raises(ClientError) as exc:
        client(fake, secret="wrong/secret+000000000000000000000000000").converse(modelId=MODEL, messages=MSG)
    err = exc.value.response
    assert (
        err["ResponseMetadata"]["HTTPStatusCode"] == 403
        and err["Error"]["Code"] == "InvalidSignatureException"
    )
    assert err["Error"]["Message"].startswith("The request signature we calculated does not match")
    assert SECRET not in str(err) and "wrong/secret" not in str(err)
    with pytest.raises(ClientError) as exc:
        client(fake, akid="AKIDUNKNOWN000000000").converse(modelId=MODEL, messages=MSG)
    assert exc.value.response["Error"]["Code"] == "UnrecognizedClientException"
    r = httpx.post(fake.url + "/model/m/converse", json={"messages": MSG}, timeout=10)
    assert r.status_code == 403 and r.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    # Rotation: the fake now accepts only the new pair.
    fake.provider.aws_keys = {"AKIDFAKEBEDROCK00002": "new/secret"}
    with pytest.raises(ClientError):
        client(fake).converse(modelId=MODEL, messages=MSG)
    assert (
        client(fake, "AKIDFAKEBEDROCK00002", "new/secret").converse(modelId=MODEL, messages=MSG)["stopReason"]
        == "end_turn"
    )


def test_bedrock_api_key_as_bearer(fake):
    body = {"messages": MSG}
    ok = httpx.post(
        fake.url + "/model/m/converse",
        json=body,
        headers={"authorization": "Bearer bedrock-api-key-EXAMPLE-01"},
    )
    assert ok.status_code == 200 and ok.json()["output"]["message"]["content"][0]["text"].startswith("Echo:")
    bad = httpx.post(fake.url + "/model/m/converse", json=body, headers={"authorization": "Bearer nope"})
    assert bad.status_code == 403 and bad.headers["x-amzn-errortype"] == "UnrecognizedClientException"


def test_scripted_errors_and_mid_stream_exception(fake):
    fake.script(
        [
            {"status": 429},
            {"status": 503},
            {"stream_error": {"after": 2, "type": "ThrottlingException", "message": "slow down"}},
        ]
    )
    c = client(fake)
    for code, status in (("ThrottlingException", 429), ("ServiceUnavailableException", 503)):
        with pytest.raises(ClientError) as exc:
            c.converse(modelId=MODEL, messages=MSG)
        assert (
            exc.value.response["Error"]["Code"] == code
            and exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        )
    stream = c.converse_stream(modelId=MODEL, messages=MSG)["stream"]
    seen = []
    with pytest.raises(EventStreamError) as exc:
        for e in stream:
            seen.append(e)
    assert (
        len(seen) == 2
        and exc.value.response["Error"]["Code"] == "throttlingException"
        and "slow down" in str(exc.value)
    )

"""`services.auth: inline`: the gateway ext_proc authenticates (no ext_authz hop), same behaviour."""

from __future__ import annotations

import httpx
import openai
import pytest
from harness import OPENAI_PROVIDER_KEY

pytestmark = pytest.mark.e2e
STACK_EXTRA = {"services": {"auth": "inline", "front": "ext_proc"}}  # inline auth in the gRPC front
MSG = [{"role": "user", "content": "hi"}]


def test_inline_auth_allows_denies_and_strips_credentials(stack, fake_openai):
    assert not any(c.name.startswith("authz") for c in stack.sup.children)
    ok = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
    assert ok.chat.completions.create(model="gpt-4o-mini", messages=MSG).choices
    rec = fake_openai.requests[-1]
    assert rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    assert stack.keys["acme"].key not in repr(rec.headers)
    for key in ("sgk_aaaaaaaa_" + "x" * 40, stack.keys["acme-revoked"].key):
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0).chat.completions.create(
                model="gpt-4o-mini", messages=MSG)  # fmt: skip
    r = httpx.post(stack.base_url + "/v1/messages", json={"model": "claude-haiku", "max_tokens": 5, "messages": MSG})
    assert r.status_code == 401 and r.json()["type"] == "error"
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme-limited"].key,
                      max_retries=0).chat.completions.create(model="gpt-4o", messages=MSG)  # fmt: skip

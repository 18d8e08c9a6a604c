"""What a JWT caller costs beside a key (docs/jwt.md): request latency through a real stack.

Run: PYTHONPATH=$PWD python -m bench.jwt_bench [--requests 400]

Per front (ext_authz + ext_proc; the HTTP front with inline auth): a stack without JWT providers
(keys only), then one with an inline-JWKS provider, where keys and RS256 tokens alternate in two
passes of `--requests` sequential chat requests each (fake OpenAI provider, no access log). Prints
p50/p95 of the last pass of each credential.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _percentiles(lat: list[float]) -> str:
    lat.sort()
    return f"p50 {statistics.median(lat):.2f} ms p95 {lat[int(0.95 * len(lat))]:.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import httpx
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from harness import FRONT_SERVICES, Stack
    from jwt.algorithms import RSAAlgorithm

    from sidegate.fakes import FakeProviderThread

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256"}
    claims = {
        "iss": "https://idp.test",
        "aud": "sg",
        "exp": int(time.time()) + 3600,
        "org": "acme",
        "sub": "u",
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    provider = {"issuer": "https://idp.test", "audiences": ["sg"], "jwks": {"inline": {"keys": [jwk]}},
                "claims": {"tenant": "org", "user": "sub"}}  # fmt: skip
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    fakes = FakeProviderThread(port=0), FakeProviderThread(port=0)
    for f in fakes:
        f.start()
    try:
        for front in sorted(FRONT_SERVICES):
            for with_jwt in (False, True):
                extra: dict[str, Any] = {
                    "services": dict(FRONT_SERVICES[front]),
                    "observability": {"access_log": None},
                }
                if with_jwt:
                    extra["jwt"] = {"providers": {"corp": provider}}
                stack = Stack(
                    Path(tempfile.mkdtemp(prefix="jwt-bench-")), fakes[0].url, fakes[1].url, extra=extra
                )
                stack.start()
                try:
                    creds = {"key": stack.keys["acme"].key, **({"jwt": token} if with_jwt else {})}
                    result = {}
                    with httpx.Client(base_url=stack.base_url, timeout=10) as c:
                        for _ in range(2):  # the first pass warms up
                            for name, cred in creds.items():
                                lat = []
                                for _ in range(args.requests):
                                    t = time.perf_counter()
                                    r = c.post(
                                        "/v1/chat/completions",
                                        json=body,
                                        headers={"authorization": "Bearer " + cred},
                                    )
                                    lat.append((time.perf_counter() - t) * 1000)
                                    assert r.status_code == 200, r.text
                                result[name] = _percentiles(lat)
                    print(front, "with a JWT provider" if with_jwt else "keys only", result, flush=True)
                finally:
                    stack.stop()
    finally:
        for f in fakes:
            f.stop()


if __name__ == "__main__":
    main()

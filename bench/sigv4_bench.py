"""What signing a Bedrock try costs (sidegate/credentials/aws.py `SigV4.sign`; docs/bedrock.md).

Run: PYTHONPATH=$PWD python -m bench.sigv4_bench [--rounds 5]

Static test credentials from the environment (no files, no metadata server), a Converse path with
an encoded model id, bodies of 1 KiB, 64 KiB and 1 MiB; per size, the median over rounds of the
mean time of one `sign` (botocore's SigV4Auth over an AWSRequest, plus the body's SHA-256).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="AKIDEXAMPLEBENCH0001", AWS_SECRET_ACCESS_KEY="bench/secret+" + "x" * 27,
        AWS_SESSION_TOKEN="t" * 300, AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )  # fmt: skip
    from sidegate import config
    from sidegate.credentials.aws import SigV4

    cfg = config.parse(
        {"providers": {"b": {"api": "bedrock", "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com"}},
         "models": {"m": {"routes": [{"provider": "b"}]}}},
        env={},
    )  # fmt: skip
    signer = SigV4(cfg.providers["b"])
    asyncio.run(signer.start(lambda: None))
    path = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"
    authority = "bedrock-runtime.us-east-1.amazonaws.com"
    for size in (1024, 64 * 1024, 1024 * 1024):
        body = b"x" * size
        headers = {":path": path, "content-length": str(size), "content-type": "application/json"}
        n = 2000 if size < 100_000 else 100
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(n):
                signer.sign("POST", authority, path, headers, body)
            rounds.append((time.perf_counter() - start) / n * 1e6)
        spread = ", ".join(f"{r:.0f}" for r in rounds)
        print(f"body {size:>8} B: {statistics.median(rounds):7.1f} us per sign (rounds: {spread})")


if __name__ == "__main__":
    main()

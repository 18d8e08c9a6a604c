"""``python -m sidegate.fakes --port N [--port N2] [--chunks K] [--chunk-delay S]``: run fake providers.

One independent provider per ``--port`` (each serves OpenAI, Azure, Anthropic and Bedrock, whose SigV4
signatures ``--aws-key`` checks); prints the URLs and runs until SIGTERM/SIGINT.

``python -m sidegate.fakes otlp --port N``: an OTLP/gRPC trace receiver instead (sidegate/fakes/otlp.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from sidegate.fakes.server import FakeProvider


async def _main(args: argparse.Namespace) -> None:
    providers = [
        FakeProvider(
            args.host,
            port,
            chunks=args.chunks,
            chunk_delay_s=args.chunk_delay,
            fixed_text=args.text,
            embedding_dims=args.embedding_dims,
            responses_api=not args.no_responses,
            aws_keys=dict(k.split(":", 1) for k in args.aws_key) if args.aws_key else None,
            aws_region=args.aws_region,
        )
        for port in (args.port or [0])
    ]
    for p in providers:
        await p.start()
        print(f"fake provider listening on {p.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for p in providers:
        await p.stop()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["otlp"]:
        from sidegate.fakes import otlp

        otlp.main(argv[1:])
        return
    ap = argparse.ArgumentParser(
        prog="python -m sidegate.fakes", description="Fake OpenAI/Anthropic providers."
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument(
        "--port", type=int, action="append", help="repeat for several providers (0: any free port)"
    )
    ap.add_argument("--chunks", type=int, default=4, help="stream pieces per answer")
    ap.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream events")
    ap.add_argument("--text", default=None, help="answer this fixed text instead of echoing the prompt")
    ap.add_argument("--embedding-dims", type=int, default=1536)
    ap.add_argument("--no-responses", action="store_true", help="no /v1/responses (as vLLM, Ollama...)")
    ap.add_argument("--aws-key", action="append", metavar="ACCESS_KEY_ID:SECRET",
                    help="Bedrock: accept SigV4 signatures by this key (repeatable; none: not checked)")  # fmt: skip
    ap.add_argument("--aws-region", default="us-east-1", help="Bedrock: the region signatures must be scoped to")
    args = ap.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_main(args))


if __name__ == "__main__":
    main()

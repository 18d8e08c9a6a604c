"""Server CPU per ext_proc stream and message: grpc.aio against the lean server (extproc/h2c.py).

    flock /tmp/sidegate-bench.lock env PYTHONPATH=$PWD python bench/grpc_bench.py [--streams 3000] [--messages 4] [--rounds 2]

A trivial echo servicer on each server, in a process of its own (uvloop), driven by a grpc.aio
client opening `--streams` streams of `--messages` request/answer pairs each, one at a time (c=1)
and 16 at a time (c=16); the server process's CPU from /proc. Only the framing differs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

ANSWER = pb.ProcessingResponse(request_headers=pb.HeadersResponse())
WARM = 50


class Echo(pb_grpc.ExternalProcessorServicer):
    async def Process(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for _ in request_iterator:
            yield ANSWER


async def _serve(kind: str, port: int) -> None:
    if kind == "lean":
        from extproc.h2call import Call
        from extproc.lean import PROCESS, LeanServer

        answer = ANSWER.SerializeToString()

        async def echo(call: Call) -> None:
            while await call.read() is not None:
                await call.send(answer)

        lean = LeanServer(PROCESS, echo, 4 << 20)
        await lean.start("127.0.0.1", port)
    else:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_ExternalProcessorServicer_to_server(Echo(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _drive(port: int, streams: int, messages: int, conc: int) -> None:
    stub = pb_grpc.ExternalProcessorStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
    req = pb.ProcessingRequest(request_headers=pb.HttpHeaders())

    async def one() -> None:
        call = stub.Process()
        for _ in range(messages):
            await call.write(req)
            await call.read()
        await call.done_writing()
        await call.read()

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    await worker(WARM)
    await asyncio.gather(*(worker(streams // conc) for _ in range(conc)))


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=3000)
    ap.add_argument("--messages", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import uvloop

    if args.serve:
        uvloop.run(_serve(args.serve[0], int(args.serve[1])))
        return 0
    print("server CPU per stream (and per message), µs")
    for r in range(args.rounds):
        for kind in ("grpcio", "lean") if r % 2 == 0 else ("lean", "grpcio"):
            for conc in (1, 16):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                p = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)], stdout=subprocess.PIPE, text=True)
                try:
                    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
                    before, t0 = _cpu(p.pid), time.perf_counter()
                    uvloop.run(_drive(port, args.streams, args.messages, conc))
                    wall, cpu = time.perf_counter() - t0, _cpu(p.pid) - before
                finally:
                    p.terminate()
                    p.wait(10)
                n = args.streams + WARM
                print(f"round {r + 1} {kind:6} c={conc:<2} {1e6 * cpu / n:7.0f} per stream "
                      f"({1e6 * cpu / n / args.messages:5.0f} per message)  wall {1e6 * wall / n:7.0f} µs per stream", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

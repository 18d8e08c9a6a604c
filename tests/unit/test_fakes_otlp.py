"""The OTLP receiver (sidegate/fakes/otlp.py) against the official SDK's OTLP/gRPC exporter."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sidegate.fakes.otlp import OtlpReceiverThread
from sidegate.ports import free_port


@pytest.fixture
def receiver():
    with OtlpReceiverThread(max_spans=5) as r:
        yield r


def _provider(endpoint: str) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": "unit"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5)))
    return tp


def test_receives_the_sdks_spans_and_answers_by_trace(receiver):
    tp = _provider(receiver.endpoint)
    tracer = tp.get_tracer("unit-scope")
    with (
        tracer.start_as_current_span("parent") as parent,
        tracer.start_as_current_span("child", attributes={"gen_ai.request.model": "m", "n": 3}) as child,
    ):
        child.add_event("first_token", {"ms": 1.5})
    tp.shutdown()
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    spans = receiver.wait_spans(trace_id, count=2, timeout_s=10)
    by_name = {s.name: s for s in spans}
    assert (
        by_name["child"].parent_span_id == by_name["parent"].span_id
        and by_name["parent"].parent_span_id == ""
    )
    assert by_name["child"].attributes == {"gen_ai.request.model": "m", "n": 3}
    assert by_name["child"].events == (("first_token", {"ms": 1.5}),)
    assert by_name["child"].service == "unit" and by_name["child"].scope == "unit-scope"
    assert by_name["child"].kind == "internal"
    assert receiver.trace_ids() == {trace_id} and receiver.spans(trace_id, service="other") == []
    assert len(receiver.resource_spans()) >= 1 and receiver.exports >= 1
    assert any(a.startswith("OTel-OTLP-Exporter-Python/") for a in receiver.user_agents), receiver.user_agents


def test_it_keeps_a_bounded_number_and_can_refuse(receiver):
    channel = grpc.insecure_channel(receiver.endpoint)
    export = pb_grpc.TraceServiceStub(channel).Export
    spans = [Span(trace_id=bytes([i + 1]) * 16, span_id=bytes([i + 1]) * 8, name=f"s{i}") for i in range(7)]
    export(
        pb.ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]),
        timeout=5,
    )
    assert [s.name for s in receiver.spans()] == ["s2", "s3", "s4", "s5", "s6"] and receiver.dropped == 2
    with pytest.raises(TimeoutError, match="0/1 spans of trace ff"):
        receiver.wait_spans("ff" * 16, timeout_s=0.2)
    receiver.unavailable = True
    with pytest.raises(grpc.RpcError) as err:
        export(pb.ExportTraceServiceRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    receiver.reset()
    assert receiver.spans() == [] and not receiver.unavailable
    channel.close()


def test_runs_as_a_process():
    port = free_port()
    cmd = [sys.executable, "-m", "sidegate.fakes", "otlp", "--port", str(port), "--print-spans"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"OTLP receiver listening on 127.0.0.1:{port}"
        tp = _provider(f"127.0.0.1:{port}")
        with tp.get_tracer("cli").start_as_current_span("hello"):
            pass
        tp.shutdown()
        deadline = time.monotonic() + 10
        line = ""
        while "hello" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "unit: hello" in line
    finally:
        proc.terminate()
        proc.wait(10)

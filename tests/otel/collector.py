"""A test OTLP/gRPC receiver: what Envoy's OpenTelemetry tracer and access logger export, as JSON lines.

The service stubs and messages come from the `opentelemetry-proto` package, which the OpenTelemetry
project generates from the official opentelemetry-proto definitions. Each span and each log record is
appended to OUT as one JSON object (ids in hex, attributes flattened to plain values), so that a test
reads them without a protobuf library. The first line on stdout is the bound port.

    collector.py --out FILE [--port N] [--delay-ms N] [--fail]

--delay-ms slows every export and --fail answers UNAVAILABLE: a collector in trouble, which must not
slow or fail the gateway's requests.
"""

import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def any_value(value):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(key_values):
    return {kv.key: any_value(kv.value) for kv in key_values}


class Sink:
    def __init__(self, path, delay, fail):
        self.path = path
        self.delay = delay
        self.fail = fail
        self.lock = threading.Lock()

    def write(self, records, context):
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "collector told to fail")
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, sort_keys=True) + "\n")


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        records = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    records.append(
                        {
                            "signal": "span",
                            "resource": resource,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "start_unix_nano": span.start_time_unix_nano,
                            "end_unix_nano": span.end_time_unix_nano,
                            "attributes": attributes(span.attributes),
                            "status_code": span.status.code,
                            "events": [
                                {"name": e.name, "attributes": attributes(e.attributes)}
                                for e in span.events
                            ],
                        }
                    )
        self.sink.write(records, context)
        return trace_service_pb2.ExportTraceServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        records = []
        for resource_logs in request.resource_logs:
            resource = attributes(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                for log in scope_logs.log_records:
                    records.append(
                        {
                            "signal": "log",
                            "resource": resource,
                            "trace_id": log.trace_id.hex(),
                            "span_id": log.span_id.hex(),
                            "body": any_value(log.body),
                            "attributes": attributes(log.attributes),
                        }
                    )
        self.sink.write(records, context)
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()

    sink = Sink(args.out, args.delay_ms / 1000, args.fail)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(sink), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(sink), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(port, flush=True)
    # The test harness kills this process when it is done (or the kernel does, with the test).
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())

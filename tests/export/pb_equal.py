#!/usr/bin/python3
"""Checks that cbus-export's protobuf and JSON encodings of one batch say the
same thing, with decoders the project did not write: the protobuf body is
read by Google's protobuf runtime into the official ExportTraceServiceRequest
(opentelemetry-proto), the JSON body by Google's protobuf-JSON parser (after
the one OTLP/JSON deviation from the proto3 mapping: ids are hex, not
base64).  Then the two messages must be equal, field for field.

  pb_equal.py BATCH.json BATCH.pb    exit 0 equal, 1 different (a diff on
                                     stderr), 2 a body does not parse

The protobuf body is also re-serialised by the runtime and parsed again, and
every string in it is checked to be UTF-8 (the runtime refuses one that is
not, which is what a receiver does).
"""
import base64
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def hex_ids_to_base64(doc):
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in s:
                        s[k] = base64.b64encode(bytes.fromhex(s[k])).decode()
    return doc


def main():
    jpath, ppath = sys.argv[1], sys.argv[2]
    with open(jpath, "rb") as f:
        jdoc = json.loads(f.read())
    with open(ppath, "rb") as f:
        raw = f.read()
    try:
        from_json = json_format.ParseDict(hex_ids_to_base64(jdoc), ExportTraceServiceRequest(),
                                          ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        print(f"JSON body does not parse: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        from_pb = ExportTraceServiceRequest.FromString(raw)
        again = ExportTraceServiceRequest.FromString(from_pb.SerializeToString())
    except Exception as exc:  # DecodeError, or a string that is not UTF-8
        print(f"protobuf body does not parse: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
    if again != from_pb:
        print("protobuf body changes when re-serialised", file=sys.stderr)
        sys.exit(1)
    if from_json != from_pb:
        a = json_format.MessageToDict(from_json, use_integers_for_enums=True)
        b = json_format.MessageToDict(from_pb, use_integers_for_enums=True)
        print("JSON and protobuf differ\n--- from JSON\n" + json.dumps(a, indent=1, sort_keys=True) +
              "\n--- from protobuf\n" + json.dumps(b, indent=1, sort_keys=True), file=sys.stderr)
        sys.exit(1)
    n = sum(len(ss.spans) for rs in from_pb.resource_spans for ss in rs.scope_spans)
    print(f"equal: {n} spans, {len(raw)} protobuf bytes, {len(json.dumps(jdoc))} JSON bytes")


if __name__ == "__main__":
    main()

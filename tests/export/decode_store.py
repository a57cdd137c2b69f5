#!/usr/bin/python3
"""Independent decoder for what cbus-collector stored: OTLP/protobuf bodies
(.pb: Google's protobuf runtime into the official ExportTraceServiceRequest
of opentelemetry-proto, always strict), OTLP/JSON bodies (python's json) and
msgpack batches (msgpack).  Prints one JSON document the
C test asserts on:

  {"files": [...], "violations": [...],
   "strict": bool, "resources": [{key: value}],
   "spans":  [{"file", "trace", "span", "parent", "name", "kind", "status",
               "status_message", "start", "end", "attrs": {key: value},
               "events": [name, ...]}],
   "events": [{"file", "event_id", "kind", "run_id", "bus_id"}]}

"violations" lists every breach of the OTLP/JSON rules cbus-export must
follow (hex ids, integer enums, 64-bit integers as decimal strings).  A
protobuf body is turned into the same OTLP/JSON form (MessageToDict, ids as
hex) and checked by the same rules; one the runtime refuses (a bad length,
a string that is not UTF-8) is a violation.  "encodings" counts the bodies
of each kind.

With --strict, every OTLP/JSON body is also parsed the way a collector does:
Google's protobuf-JSON parser (google.protobuf.json_format.Parse, unknown
fields refused) into the official ExportTraceServiceRequest message
(opentelemetry-proto).  A body it rejects is a violation: a real receiver
answers it with 400.  Without those packages --strict exits 3.
"""
import json
import os
import re
import sys

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
DEC = re.compile(r"^[0-9]+$")


def value(v, where, bad):
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        if not isinstance(v["intValue"], str) or not DEC.match(v["intValue"]):
            bad.append(f"{where}: intValue {v['intValue']!r} is not a decimal string")
            return None
        n = int(v["intValue"])
        if not INT64_MIN <= n <= INT64_MAX:
            bad.append(f"{where}: intValue {n} does not fit a signed 64-bit integer")
        return n
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [value(x, where, bad) for x in v["arrayValue"].get("values", [])]
    bad.append(f"{where}: unknown value {v!r}")
    return None


def attrs(lst, where, bad):
    out = {}
    for a in lst or []:
        if a["key"] in out:
            bad.append(f"{where}: duplicate attribute {a['key']}")
        out[a["key"]] = value(a["value"], where + ":" + a["key"], bad)
    return out


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
STRICT = None  # (json_format, ExportTraceServiceRequest) with --strict


def strict_parse(raw, name, bad):
    json_format, request = STRICT
    try:
        json_format.Parse(raw, request(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        bad.append(f"{name}: protobuf-JSON parser rejects it: {exc}")


def pb_doc(raw):
    """A protobuf body as the OTLP/JSON document it stands for."""
    import base64
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    msg = ExportTraceServiceRequest.FromString(raw)
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in s:
                        s[k] = base64.b64decode(s[k]).hex()
    return doc


def otlp(path, name, spans, resources, bad):
    with open(path, "rb") as f:
        raw = f.read()
    if name.endswith(".pb"):
        doc = pb_doc(raw)
    else:
        if STRICT:
            strict_parse(raw, name, bad)
        doc = json.loads(raw)
    for rs in doc["resourceSpans"]:
        res = attrs(rs["resource"]["attributes"], name + ":resource", bad)
        resources.append(res)
        for key in ("service.name", "host.name", "process.pid"):
            if key not in res:
                bad.append(f"{name}: resource lacks {key}")
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                w = f"{name}:{s.get('spanId')}"
                if not HEX32.match(s["traceId"]):
                    bad.append(f"{w}: traceId {s['traceId']!r}")
                if not HEX16.match(s["spanId"]):
                    bad.append(f"{w}: spanId {s['spanId']!r}")
                if "parentSpanId" in s and not HEX16.match(s["parentSpanId"]):
                    bad.append(f"{w}: parentSpanId {s['parentSpanId']!r}")
                if not isinstance(s["kind"], int):
                    bad.append(f"{w}: kind is not an integer")
                for t in ("startTimeUnixNano", "endTimeUnixNano"):
                    if not isinstance(s[t], str) or not DEC.match(s[t]):
                        bad.append(f"{w}: {t} is not a decimal string")
                if int(s["endTimeUnixNano"]) < int(s["startTimeUnixNano"]):
                    bad.append(f"{w}: ends before it starts")
                code = s.get("status", {}).get("code", 0)
                if not isinstance(code, int):
                    bad.append(f"{w}: status code is not an integer")
                spans.append({
                    "file": name,
                    "trace": s["traceId"],
                    "span": s["spanId"],
                    "parent": s.get("parentSpanId", ""),
                    "name": s["name"],
                    "kind": s["kind"],
                    "status": code,
                    "status_message": s.get("status", {}).get("message", ""),
                    "start": int(s["startTimeUnixNano"]),
                    "end": int(s["endTimeUnixNano"]),
                    "attrs": attrs(s.get("attributes"), w, bad),
                    "events": [e["name"] for e in s.get("events", [])],
                })


def mpack(path, name, events, bad):
    import msgpack
    with open(path, "rb") as f:
        doc = msgpack.unpackb(f.read(), raw=False)
    if doc.get("format") != "cbus.events":
        bad.append(f"{name}: format {doc.get('format')!r}")
    for e in doc["events"]:
        events.append({"file": name, "event_id": e["event_id"], "kind": e["kind"],
                       "run_id": e.get("run_id", ""), "bus_id": doc.get("bus_id")})


def main():
    global STRICT
    args = sys.argv[1:]
    if args and args[0] == "--strict":
        args = args[1:]
        try:
            from google.protobuf import json_format
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest)
        except ImportError as exc:
            print(f"decode_store.py --strict: {exc} (run scripts/venv.sh)", file=sys.stderr)
            sys.exit(3)
        STRICT = (json_format, ExportTraceServiceRequest)
    store = args[0]
    files = sorted(os.listdir(store)) if os.path.isdir(store) else []
    files = [f for f in files if f.endswith(".json") or f.endswith(".msgpack") or f.endswith(".pb")]
    spans, events, resources, bad = [], [], [], []
    for name in files:
        path = os.path.join(store, name)
        try:
            if name.endswith(".json") or name.endswith(".pb"):
                otlp(path, name, spans, resources, bad)
            else:
                mpack(path, name, events, bad)
        except Exception as exc:  # a body the decoder cannot read is a finding
            bad.append(f"{name}: {type(exc).__name__}: {exc}")
    encodings = {k: sum(1 for f in files if f.endswith("." + k)) for k in ("pb", "json", "msgpack")}
    json.dump({"files": files, "strict": bool(STRICT), "violations": bad, "spans": spans, "encodings": encodings,
               "resources": resources, "events": events}, sys.stdout)


if __name__ == "__main__":
    main()

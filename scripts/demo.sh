#!/usr/bin/env bash
# The cbus end-to-end demo (the README's first command).
#
#   scripts/demo.sh [--short] [--duration SECONDS] [--rate REQ_PER_S] [--keep]
#
# Installs what is missing, builds, creates a bus, starts the five consumer
# daemons with the configs shipped in the repo (the exporter sending OTLP to
# a loopback collector this script also starts), drives realistic load with
# cbus-loadgen while showing live `cbusctl stat`, shows one prompt and answer
# whole with `cbusctl tail --body`, then prints the cost report,
# the rate limiter's hottest keys, a conversation as cbus-history keeps it
# (CLI and HTTP API), the exporter's counters, the collector's
# span count and the audit log's verification, and checks that the cost
# tracker's token totals equal the load generator's own count.  Everything it
# started (processes, the shm segment, temp files) is cleaned up on exit,
# Ctrl-C included.  Exit status 0 only if every stage passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=15
RATE=1500
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --short) DURATION=5; RATE=800 ;;
    --duration) DURATION=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "demo: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

bold() { if [ -t 1 ]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }
fail() { echo "demo: FAILED: $*" >&2; FAILED=1; }
FAILED=0

scripts/deps.sh

# CBUS_DEMO_BUILD: an existing build tree to reuse (scripts/test.sh passes its own).
BUILD=${CBUS_DEMO_BUILD:-build/demo}
bold "Building ($BUILD)"
[ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCBUS_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target cbusctl cbus-cost cbus-audit cbus-export \
  cbus-ratelimit cbus-collector cbus-loadgen cbus-history cbus-web >/dev/null
bin() { find "$BUILD" -type f -name "$1" -perm -u+x | head -n 1; }
CBUSCTL=$(bin cbusctl); COST=$(bin cbus-cost); AUDIT=$(bin cbus-audit); EXPORT=$(bin cbus-export)
RATELIMIT=$(bin cbus-ratelimit); COLLECTOR=$(bin cbus-collector); LOADGEN=$(bin cbus-loadgen)
HISTORY=$(bin cbus-history)
WEB=$(bin cbus-web)
PRICES=$ROOT/consumers/cost/model_prices_and_context_window.json

WORK=$(mktemp -d /tmp/cbus-demo.XXXXXX)
BUS=demo$$
declare -A PIDS=()
WATCH_PID=""

cleanup() {
  trap - EXIT INT TERM
  [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null || true
  for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for name in "${!PIDS[@]}"; do kill -0 "${PIDS[$name]}" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for name in "${!PIDS[@]}"; do kill -KILL "${PIDS[$name]}" 2>/dev/null || true; done
  "$CBUSCTL" destroy "$BUS" >/dev/null 2>&1 || true
  if [ $KEEP = 1 ]; then echo "demo: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted, cleaning up" >&2; exit 130' INT TERM

# Stops one daemon with SIGTERM and checks it exits 0 (a clean shutdown).
stop_daemon() {
  local name=$1 pid=${PIDS[$1]} st=0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || st=$?
  unset "PIDS[$name]"
  [ $st = 0 ] || fail "$name exited with status $st on SIGTERM (log: $WORK/$name.log)"
}

bold "Creating bus '$BUS' and starting the consumers"
"$CBUSCTL" create "$BUS" --capacity 65536

"$COLLECTOR" --listen 127.0.0.1:0 --port-file "$WORK/collector.port" --stats "$WORK/collector.json" \
  >"$WORK/collector.log" 2>&1 &
PIDS[collector]=$!
for _ in $(seq 100); do [ -s "$WORK/collector.port" ] && break; sleep 0.05; done
[ -s "$WORK/collector.port" ] || { fail "collector did not start"; cat "$WORK/collector.log"; exit 1; }
PORT=$(cat "$WORK/collector.port")

# The shipped configs (the build tree's, from consumers/<d>/<d>.ini.in), with
# their state paths moved into this run's temp dir.
sed -e "s|%S/cost/%b|$WORK/cost|g" -e "s|^file = .*|file = $PRICES|" \
  "$BUILD/consumers/cost/cost.ini" >"$WORK/cost.ini"
sed -e "s|^dir = %S/export/spool.*|dir = $WORK/spool|" "$BUILD/consumers/export/export.ini" >"$WORK/export.ini"

"$COST" --bus "$BUS" --config "$WORK/cost.ini" >"$WORK/cost.log" 2>&1 &
PIDS[cost]=$!
"$AUDIT" --bus "$BUS" --config "$BUILD/consumers/audit/audit.ini" --dir "$WORK/audit" >"$WORK/audit.log" 2>&1 &
PIDS[audit]=$!
"$EXPORT" --bus "$BUS" --config "$WORK/export.ini" --endpoint "http://127.0.0.1:$PORT" \
  --status-file "$WORK/export.status.json" >"$WORK/export.log" 2>&1 &
PIDS[export]=$!
"$RATELIMIT" --bus "$BUS" --config "$BUILD/consumers/ratelimit/ratelimit.ini" \
  --status-file "$WORK/ratelimit.status.json" >"$WORK/ratelimit.log" 2>&1 &
PIDS[ratelimit]=$!
mkdir -m 700 "$WORK/history"
"$HISTORY" --bus "$BUS" --config "$BUILD/consumers/history/history.ini" --db "$WORK/history/demo.db" \
  --listen 127.0.0.1:0 >"$WORK/history.log" 2>&1 &
PIDS[history]=$!

# Wait until all five are attached.
for _ in $(seq 100); do
  n=$("$CBUSCTL" stat "$BUS" --json 2>/dev/null | python3 -c \
      'import json,sys; print(len([c for c in json.load(sys.stdin)["consumers"] if c["alive"]]))' 2>/dev/null || echo 0)
  [ "$n" -ge 5 ] && break
  sleep 0.1
done
for d in cost audit export ratelimit history; do
  kill -0 "${PIDS[$d]}" 2>/dev/null || { fail "cbus-$d exited at start:"; cat "$WORK/$d.log" >&2; exit 1; }
done
echo "consumers attached: cost, audit, export, ratelimit, history (logs in $WORK)"
# cbus-web: the dashboard, on a free loopback port (it prints the port).
"$WEB" --bus "$BUS" --listen 127.0.0.1:0 --prices "$PRICES" --cost-snapshot "$WORK/cost/snapshot.json" \
  --ratelimit-status "$WORK/ratelimit.status.json" --status-file "$WORK/web.status.json" \
  >"$WORK/web.out" 2>"$WORK/web.log" &
PIDS[web]=$!
for _ in $(seq 100); do grep -q '^listening' "$WORK/web.out" 2>/dev/null && break; sleep 0.05; done
WEB_PORT=$(awk '/^listening/ {print $3}' "$WORK/web.out")
[ -n "$WEB_PORT" ] || { fail "cbus-web did not start"; cat "$WORK/web.log" >&2; exit 1; }
bold "Dashboard: http://127.0.0.1:$WEB_PORT/  (cbus-web; events as SSE at /v1/events, state at /v1/state)"

bold "Driving load: cbus-loadgen, ${RATE} requests/s for ${DURATION}s, with cbus_admit()"
"$LOADGEN" --bus "$BUS" --threads 2 --rate "$RATE" --duration "${DURATION}s" --users 500 --admit \
  --prices "$PRICES" --summary-json "$WORK/loadgen.json" --quiet >"$WORK/loadgen.out" 2>&1 &
LOADGEN_PID=$!
"$CBUSCTL" stat "$BUS" --watch 5 &
WATCH_PID=$!
st=0; wait $LOADGEN_PID || st=$?
kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; WATCH_PID=""
cat "$WORK/loadgen.out"
[ $st = 0 ] || fail "cbus-loadgen exited with status $st"

bold "Draining: waiting for the lossless consumers to catch up"
for _ in $(seq 200); do
  lag=$("$CBUSCTL" stat "$BUS" --json | python3 -c \
    'import json,sys; print(max([c["lag"] for c in json.load(sys.stdin)["consumers"] if c["alive"]] or [0]))')
  [ "$lag" = 0 ] && break
  sleep 0.1
done
"$CBUSCTL" stat "$BUS"
for d in cost audit export ratelimit history; do
  kill -0 "${PIDS[$d]}" 2>/dev/null || fail "cbus-$d is no longer running (log: $WORK/$d.log)"
done

bold "A prompt and an answer as they are on the bus (cbusctl tail --body)"
# The oldest chat start and LLM end still in the ring: the whole messages
# JSON, tags and metadata of the start, the whole streamed answer of the end.
"$CBUSCTL" tail "$BUS" --oldest --body --kind chat_model_start,llm_end --count 2 \
  || fail "cbusctl tail --body"

bold "Rate limiter: hottest keys"
"$RATELIMIT" status --status-file "$WORK/ratelimit.status.json" --top 10 || fail "cbus-ratelimit status"

python3 - "$WEB_PORT" <<'PY' || fail "cbus-web /v1/state"
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/state", timeout=5))
d = s["daemon"]
print(f"cbus-web: {d['events']} events shown, {d['lost']} lost, {s['bus']['tail']} bus positions (bodies included), "
      f"spend {s['cost']['total']['cost_usd'] if s['cost'] else '-'} USD, {len(s['throttled'])} keys throttled")
PY

bold "Stopping the consumers (SIGTERM: each flushes, checkpoints and exits 0; cbus-history after its conversation below)"
for d in web ratelimit export audit cost; do stop_daemon "$d"; done

bold "A conversation as cbus-history keeps it (two turns with a tool, emitted with cbusctl)"
# After the other consumers stopped: its three model calls are not the load
# generator's, and the cost cross-check below compares against that.
# A LangChain-style agent: every model call gets the whole history again;
# cbus-history stores each message once (the new turn of each prompt, the
# answers, the tool's call and result), with parent links.
CONV=demo-trip-$$
msg() { printf '{"role":"%s","parts":[{"type":"text","content":"%s"}]}' "$1" "$2"; }
SYS=$(msg system "You are a travel assistant."); U1=$(msg human "What is the weather in Paris?")
A1=$(msg ai "Let me check."); T1=$(msg tool "sunny, 21C"); A2=$(msg ai "It is sunny in Paris, 21C.")
U2=$(msg human "And tomorrow?")
printf '[%s,%s]' "$SYS" "$U1" >"$WORK/p1.json"
printf '[%s,%s,%s,%s]' "$SYS" "$U1" "$A1" "$T1" >"$WORK/p2.json"
printf '[%s,%s,%s,%s,%s,%s]' "$SYS" "$U1" "$A1" "$T1" "$A2" "$U2" >"$WORK/p3.json"
turn() { # run-id prompt-file answer
  "$CBUSCTL" emit "$BUS" --kind chat_model_start --session "$CONV" --user alice --model gpt-4o \
    --run-id "$1" --messages-file "$2" &&
  "$CBUSCTL" emit "$BUS" --kind llm_end --session "$CONV" --user alice --model gpt-4o \
    --run-id "$1" --text "$3" --input-tokens 60 --output-tokens 12
}
rid() { python3 -c 'import uuid; print(uuid.uuid4())'; }
R_TOOL=$(rid)
{ turn "$(rid)" "$WORK/p1.json" "Let me check." &&
  "$CBUSCTL" emit "$BUS" --kind tool_start --session "$CONV" --run-id "$R_TOOL" --name weather --text Paris &&
  "$CBUSCTL" emit "$BUS" --kind tool_end --session "$CONV" --run-id "$R_TOOL" --name weather --text "sunny, 21C" &&
  turn "$(rid)" "$WORK/p2.json" "It is sunny in Paris, 21C." &&
  turn "$(rid)" "$WORK/p3.json" "Rain is likely tomorrow: take an umbrella."; } || fail "cbusctl emit"
for _ in $(seq 100); do
  "$HISTORY" show "$CONV" --db "$WORK/history/demo.db" 2>/dev/null | grep -q " 8 messages" && break
  sleep 0.1
done
"$HISTORY" rename "$CONV" "Paris weather" --db "$WORK/history/demo.db" >/dev/null || fail "cbus-history rename"
"$HISTORY" show "$CONV" --db "$WORK/history/demo.db" | tee "$WORK/conv.txt" || fail "cbus-history show"
grep -q " 8 messages" "$WORK/conv.txt" || fail "the conversation does not have its 8 messages"
echo "search 'umbrella':"; "$HISTORY" search umbrella --db "$WORK/history/demo.db" || fail "cbus-history search"
HPORT=$(sed -n 's|.*API http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$WORK/history.log" | head -n 1)
python3 - "$HPORT" "$CONV" <<'EOF' || fail "cbus-history HTTP API"
import json, sys, urllib.request
port, conv = sys.argv[1], sys.argv[2]
base = "http://127.0.0.1:%s/v1/conversations" % port
doc = json.load(urllib.request.urlopen("%s/%s/messages" % (base, conv), timeout=5))
print("GET /v1/conversations/%s/messages: %d messages, roles %s" % (
    conv, len(doc["messages"]), " ".join(m["role"] for m in doc["messages"])))
n = len(json.load(urllib.request.urlopen(base + "?limit=1000", timeout=5))["conversations"])
print("GET /v1/conversations: %d conversations (the load generator's sessions too)" % n)
sys.exit(0 if len(doc["messages"]) == 8 else 1)
EOF

stop_daemon history


bold "Cost report (cbus-cost report; first 45 lines)"
"$COST" report --state-dir "$WORK/cost" --sessions 5 >"$WORK/cost-report.txt" || fail "cbus-cost report"
head -n 45 "$WORK/cost-report.txt"
echo "... ($(wc -l <"$WORK/cost-report.txt") lines in all: every model, user and the top sessions)"

bold "Exporter counters"
python3 - "$WORK/export.status.json" <<'EOF' || fail "exporter status"
import json, sys
s = json.load(open(sys.argv[1]))
flat = {k: v for k, v in s.items() if not isinstance(v, (dict, list))}
for k, v in flat.items():
    print(f"  {k:28} {v}")
for k, v in s.items():
    if isinstance(v, dict):
        for k2, v2 in v.items():
            if not isinstance(v2, (dict, list)):
                print(f"  {k + '.' + k2:28} {v2}")
EOF
stop_daemon collector

bold "Collector"
python3 - "$WORK/collector.json" <<'EOF' || fail "the collector received no spans"
import json, sys
s = json.load(open(sys.argv[1]))
print("  " + ", ".join(f"{k} {v}" for k, v in s.items() if not isinstance(v, (dict, list))))
spans = s.get("spans", 0)
sys.exit(0 if spans > 0 else 1)
EOF

bold "Audit log: verify the hash chain"
"$AUDIT" verify "$WORK/audit" || fail "cbus-audit verify"

bold "Cross-check: cost tracker totals against the load generator's own count"
python3 - "$WORK/loadgen.json" "$WORK/cost/snapshot.json" <<'EOF' || fail "totals disagree"
import json, sys
lg = json.load(open(sys.argv[1]))
snap = json.load(open(sys.argv[2]))
total = snap["total"]
tokens = total["tokens"]
def tok(name):  # absent (null) means no event reported it: the loadgen then sent none
    return tokens.get(name) or 0
checks = [
    ("llm calls", lg["llm_calls"], total["requests"]),
    ("input tokens", lg["input_tokens"], tok("input")),
    ("output tokens", lg["output_tokens"], tok("output")),
    ("cache read tokens", lg["cache_read_tokens"], tok("cache_read")),
    ("cache creation tokens", lg["cache_creation_tokens"], tok("cache_creation")),
    ("reasoning tokens", lg["reasoning_tokens"], tok("reasoning")),
]
ok = True
for name, a, b in checks:
    mark = "ok" if a == b else "MISMATCH"
    ok &= a == b
    print(f"  {name:22} loadgen {a:>14}   cbus-cost {b:>14}   {mark}")
sys.exit(0 if ok else 1)
EOF

if [ $FAILED = 0 ]; then
  bold "Demo passed: every stage succeeded; cleaning up"
else
  bold "Demo FAILED (see the messages above; logs kept in the output)"
  for d in cost audit export ratelimit history collector; do
    [ -f "$WORK/$d.log" ] && { echo "--- $d.log (last lines)"; tail -n 5 "$WORK/$d.log"; }
  done
  exit 1
fi

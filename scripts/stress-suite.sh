#!/usr/bin/env bash
# Issue 12 item 21's proof: the whole release ctest N times in a row while
# stress-ng loads every core, counting green runs.  Usage:
#   scripts/stress-suite.sh [BUILD_DIR] [RUNS]     (defaults: build/release, 10)
# Needs stress-ng (scripts/deps.sh).  Exports CBUS_TEST_STRICT=1 like the test
# command, and CBUS_TEST_PYTHON from scripts/venv.sh.  Prints one line per
# run (status, seconds, failing tests) and a summary; exits 1 if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release} runs=${2:-10}
command -v stress-ng >/dev/null || { echo "stress-suite: stress-ng is not installed (scripts/deps.sh)" >&2; exit 2; }
export CBUS_TEST_STRICT=1
CBUS_TEST_PYTHON=$(scripts/venv.sh) || exit 2
export CBUS_TEST_PYTHON
# CBUS_STRESS_NICE=N runs the load at that niceness (default 0): still every
# idle cycle of both cores, without starving other work on a shared machine.
nice -n "${CBUS_STRESS_NICE:-0}" stress-ng --cpu "$(nproc)" --timeout 0 --quiet &
load=$!
trap 'kill "$load" 2>/dev/null; wait "$load" 2>/dev/null' EXIT
green=0
log=$(mktemp /tmp/cbus-stress-suite.XXXXXX)
for i in $(seq 1 "$runs"); do
  t0=$(date +%s)
  if ctest --test-dir "$build" --output-on-failure --timeout 600 >"$log" 2>&1; then
    green=$((green + 1)); st=green
  else
    st="FAILED: $(sed -n 's/^[[:space:]]*[0-9]* - \(.*\) (.*)$/\1/p' "$log" | tr '\n' ' ')"
    cp "$log" "$log.run$i"
  fi
  echo "stress-suite: run $i/$runs $st ($(( $(date +%s) - t0 )) s, load $(cut -d' ' -f1 /proc/loadavg))"
done
rm -f "$log"
echo "stress-suite: $green of $runs runs green under stress-ng --cpu $(nproc)"
[ "$green" = "$runs" ]

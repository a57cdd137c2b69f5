#!/usr/bin/env bash
# Under CBUS_TEST_STRICT=1 (set by scripts/test.sh) a test that cannot run
# fails; without it, it skips.  Forces the skip condition of three kinds of
# site and checks both behaviours:
#   - a plain stress program (exit 77 = ctest skip): a bus name the library
#     refuses, so the bus cannot be created;
#   - a Criterion test (cbus_test_skip_or_fail): python3's msgpack shadowed
#     by a module that fails to import;
#   - cbus-soak: a daemon binary that does not exist.
# Usage: strict_skips.sh STRESS_ADMIT AUDIT_FORMAT CBUS_SOAK
set -uo pipefail
stress=$1 audit=$2 soak=$3
fail=0 n=0
tmp=$(mktemp -d /tmp/cbus-strict.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
expect() { # name, want-status, got-status, output file, pattern
  n=$((n + 1))
  if [ "$3" != "$2" ] || ! grep -q -- "$5" "$4"; then
    echo "strict_skips: $1: exit $3 (want $2), output:" >&2
    sed 's/^/    /' "$4" >&2
    fail=$((fail + 1))
  fi
}
# 1. plain program
env -u CBUS_TEST_STRICT CBUS_TEST_PREFIX=no/such "$stress" >"$tmp/o" 2>&1; expect "stress skip" 77 $? "$tmp/o" "skip:"
CBUS_TEST_STRICT=1 CBUS_TEST_PREFIX=no/such "$stress" >"$tmp/o" 2>&1; expect "stress strict" 1 $? "$tmp/o" "cannot be skipped"
# 2. Criterion test
mkdir "$tmp/py" && echo 'raise ImportError("shadowed by tests/strict_skips.sh")' >"$tmp/py/msgpack.py"
filter='audit_format/python_msgpack_decodes_and_rechecks_the_chain'
env -u CBUS_TEST_STRICT PYTHONPATH="$tmp/py" CBUS_TEST_PREFIX=tstrict "$audit" --verbose --filter="$filter" >"$tmp/o" 2>&1
expect "criterion skip" 0 $? "$tmp/o" "\[SKIP\]"
CBUS_TEST_STRICT=1 PYTHONPATH="$tmp/py" CBUS_TEST_PREFIX=tstrict "$audit" --verbose --filter="$filter" >"$tmp/o" 2>&1
expect "criterion strict" 1 $? "$tmp/o" "cannot be skipped"
# 3. the soak
CBUS_TEST_STRICT=1 "$soak" --duration 1s --cost /nonexistent/cbus-cost >"$tmp/o" 2>&1
expect "soak strict" 3 $? "$tmp/o" "cannot be skipped"
echo "strict_skips: $((n - fail)) passed, $fail failed"
[ "$fail" = 0 ]

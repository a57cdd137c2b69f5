#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, then builds
# and runs every suite three ways:
#   1. release build with -Werror: all Criterion suites and stress programs;
#   2. ASan+UBSan build: the same suites (cross-process tests included) but
#      the four slow-disk tests (label slow_disk: a daemon held for seconds in
#      a sleeping fsync hook, about 70 s that add no code to what ASan sees:
#      the release stage runs them), and the Node package's tests with a
#      sanitized addon;
#   3. TSan build: the in-process lock-free stress programs (label "stress";
#      Criterion aborts under TSan, and TSan cannot see cross-process sync);
#   4. libFuzzer on every parser of untrusted bytes, bounded time per target.
# The release run also runs the end-to-end demo in short mode and the short
# chaos soak (ctest label "soak").
# CBUS_TEST_QUICK=1 skips the sanitizer builds (for a fast local loop).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# A test that cannot run here (missing package, binary or privilege) fails
# instead of skipping (tests/support.h: cbus_test_skip_or_fail).
export CBUS_TEST_STRICT=1
jobs=$(nproc)
run_suite() { # dir, cmake args..., then -- ctest args...
  local dir=$1; shift
  local cm=() ct=() targets=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do cm+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  ct=("$@")
  echo "=== cbus: configure ${dir} (${cm[*]})"
  cmake -S . -B "$dir" -DCBUS_WERROR=ON "${cm[@]}" >/dev/null
  # With a label filter, build only the programs those tests run (their
  # targets carry the test's name).
  if [ ${#ct[@]} -gt 0 ] && [ "${ct[0]}" = "-L" ]; then
    mapfile -t targets < <(ctest --test-dir "$dir" -N "${ct[@]}" | sed -n 's/^ *Test *#[0-9]*: //p')
  fi
  echo "=== cbus: build ${dir} ${targets[*]}"
  if [ ${#targets[@]} -gt 0 ]; then
    cmake --build "$dir" -j"$jobs" --target "${targets[@]}" >/dev/null
  else
    cmake --build "$dir" -j"$jobs" >/dev/null
  fi
  echo "=== cbus: test ${dir}"
  ctest --test-dir "$dir" --output-on-failure --timeout 600 "${ct[@]}"
}
start=$(date +%s)
export CBUS_TEST_PYTHON; CBUS_TEST_PYTHON=$(scripts/venv.sh) # strict OTLP decoding (export tests)
run_suite build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "=== cbus: Node package (bindings/node): npm ci builds the addon, node --test"
(cd bindings/node && CBUS_WERROR=1 npm ci --no-audit --no-fund >/dev/null && CBUS_BUILD_DIR="$PWD/../../build/release" npm test)
echo "=== cbus: cbus-web's dashboard in headless Chromium (playwright-core, /usr/bin/chromium)"
(cd tests/web/browser && npm ci --no-audit --no-fund >/dev/null && CBUS_BUILD_DIR="$PWD/../../../build/release" npm test)
echo "=== cbus: end-to-end demo, short mode"
CBUS_DEMO_BUILD=build/release scripts/demo.sh --short
CBUS_COST_BIN=build/release/consumers/cost/cbus-cost bindings/python/test.sh # Python package, pytest
if [ "${CBUS_TEST_QUICK:-0}" != 1 ]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCBUS_SANITIZE=address,undefined -- -LE slow_disk
  echo "=== cbus: Node package under ASan+UBSan (the addon sanitized, the runtimes preloaded into node)"
  (cd bindings/node && CBUS_WERROR=1 CBUS_SANITIZE=address,undefined node scripts/build.cjs >/dev/null &&
    CBUS_NODE_ADDON=build/address-undefined/cbus_node.node \
    LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    CBUS_BUILD_DIR="$PWD/../../build/release" npm test) # node itself leaks by design: no leak check
  TSAN_OPTIONS=halt_on_error=1 \
    run_suite build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCBUS_SANITIZE=thread -- -L stress
  echo "=== cbus: libFuzzer, ${CBUS_FUZZ_SECONDS:-10} s per target"
  # A fixed libFuzzer seed here, so a green commit stays green; scripts/fuzz.sh
  # alone explores with a random seed (CBUS_FUZZ_SEED=0).
  CBUS_FUZZ_SEED=${CBUS_FUZZ_SEED:-1} scripts/fuzz.sh "${CBUS_FUZZ_SECONDS:-10}"
fi
echo "=== cbus: all test runs passed in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes with libFuzzer for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      default 20
#   scripts/fuzz.sh --seeds                   regenerate the structured seeds
#   FUZZ_TARGETS="segment msgpack" scripts/fuzz.sh 60   only these targets
#   CBUS_FUZZ_SEED=N scripts/fuzz.sh                   libFuzzer seed (0, the default: random)
#
# Installs clang and libFuzzer's runtime if missing (as root), builds the
# project in build/fuzz with clang (coverage, ASan and UBSan in every library;
# tests/fuzz/CMakeLists.txt links each target with libFuzzer), replays the committed corpus and regressions, then runs each
# target for the given time from a scratch copy of its corpus (the committed
# corpus is not rewritten; copy interesting new inputs by hand).  A crash,
# leak, timeout or failed invariant stops with exit 1 and names the input
# file to move into tests/fuzz/regressions/<target>/.  See docs/fuzz.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=20
seeds=0
case "${1:-}" in
  --seeds) seeds=1 ;;
  '') ;;
  *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET | --seeds]" >&2; exit 2 ;;
  *) secs=$1 ;;
esac

# ---- toolchain ---------------------------------------------------------------
need=()
command -v clang >/dev/null || need+=(clang)
rt=$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | head -1 || true)
[ -n "$rt" ] || need+=(libclang-rt-14-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "fuzz: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
  else
    echo "fuzz: needs clang and libFuzzer: sudo apt-get install -y clang libclang-rt-14-dev" >&2
    exit 2
  fi
fi
scripts/deps.sh

# ---- build --------------------------------------------------------------------
build=${CBUS_FUZZ_BUILD:-build/fuzz}
# The project itself, with coverage and sanitizers in every library; only the
# fuzz programs (and what they link) are built.
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCBUS_BUILD_TESTS=OFF \
  -DCBUS_FUZZ=ON -DCBUS_SANITIZE=fuzzer-no-link,address,undefined >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz_programs >/dev/null
bin=$build/tests/fuzz # the fuzz programs
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if [ $seeds = 1 ]; then
  "$bin/fuzz_make_seeds" tests/fuzz/corpus
  echo "fuzz: structured seeds written to tests/fuzz/corpus"
  exit 0
fi

targets=${FUZZ_TARGETS:-$(cd "$bin" && ls fuzz_* | sed -n 's/^fuzz_\([a-z_]*\)$/\1/p' |
                          grep -v -e '^replay_' -e '^make_seeds$')}
# ---- replay what is committed, then fuzz ---------------------------------------
work=$(mktemp -d /tmp/cbus-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
# One target: replay its committed inputs, then fuzz for secs.  What it
# prints goes to $work/$t.out; $work/$t.failed marks a failure until the
# target has passed (so a step that stops the function early fails it too).
fuzz_one() {
  local t=$1
  touch "$work/$t.failed"
  {
    if [ ! -x "$bin/fuzz_$t" ]; then echo "fuzz: no target $t"; return; fi
    if ! "$bin/fuzz_replay_$t" "tests/fuzz/corpus/$t/" "tests/fuzz/regressions/$t/" >"$work/$t.replay" 2>&1; then
      echo "fuzz: $t: a committed input fails:"; tail -30 "$work/$t.replay"; return
    fi
    mkdir -p "$work/$t" "$root/$build/crashes/$t"
    cp -r "tests/fuzz/corpus/$t/." "$work/$t/" 2>/dev/null || true
    echo "=== fuzz: $t for ${secs}s"
    if ! (cd "$work" && "$root/$bin/fuzz_$t" -max_total_time="$secs" -seed="${CBUS_FUZZ_SEED:-0}" -timeout=10 -rss_limit_mb=2048 \
            -max_len=65536 -print_final_stats=1 -artifact_prefix="$root/$build/crashes/$t/" \
            "$work/$t" "$root/tests/fuzz/corpus/$t" >"$work/$t.log" 2>&1); then
      echo "fuzz: $t FAILED; the input is in $build/crashes/$t/:"
      grep -E 'ERROR|SUMMARY|invariant|Test unit written|runtime error' "$work/$t.log" | head -20
    else
      grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$work/$t.log" | tr '\n' ' '; echo
      grep -E '^#[0-9]+ *DONE' "$work/$t.log" | tail -1 || true
      rm -f "$work/$t.failed"
    fi
  } >"$work/$t.out" 2>&1
}
# libFuzzer runs on one thread: one target per CPU at a time (CBUS_FUZZ_JOBS),
# each still for its whole secs; the reports in target order.
jobs=${CBUS_FUZZ_JOBS:-$(nproc)}
running=0
for t in $targets; do
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait
failed=()
for t in $targets; do
  cat "$work/$t.out"
  [ -e "$work/$t.failed" ] && failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: all targets clean (${secs}s each)"

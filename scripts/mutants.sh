#!/usr/bin/env bash
# Mutation check (docs/mutation.md): applies each planted bug under
# tests/mutants/ (NN-name.patch) to the source tree one at a time, rebuilds
# BUILD_DIR, runs the suites named on the patch's "Suites:" line (a ctest -R
# regex) and says which tests caught it; then takes the bug out again.
#   scripts/mutants.sh [BUILD_DIR] [PATCH...]   (default build/mut, every patch)
# Not part of the test command: it edits the tree (reverted on exit, also on
# ^C) and takes a few minutes per mutant.  Exits 1 if any mutant survived.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/mut}
shift || true
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=(tests/mutants/*.patch)
export CBUS_TEST_STRICT=1
CBUS_TEST_PYTHON=${CBUS_TEST_PYTHON:-$(scripts/venv.sh)} || exit 2
export CBUS_TEST_PYTHON
if [ ! -f "$build/build.ninja" ]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 2
fi
applied=""
trap '[ -n "$applied" ] && git apply -R "$applied"' EXIT
survived=0
for p in "${patches[@]}"; do
    name=$(basename "$p" .patch)
    suites=$(sed -n 's/^Suites: //p' "$p" | head -1)
    if ! git apply --check "$p" 2>/dev/null; then
        echo "$name: DOES NOT APPLY (the code moved: refresh the patch)"
        survived=1
        continue
    fi
    git apply "$p" && applied=$p
    if ! cmake --build "$build" -j2 >"$build/mutant-build.log" 2>&1; then
        echo "$name: caught by the build (see $build/mutant-build.log)"
    else
        out=$(ctest --test-dir "$build" -R "$suites" -j2 --timeout 300 2>&1)
        failed=$(printf '%s\n' "$out" | sed -n 's/^[[:space:]]*[0-9][0-9]* - \([^ ]*\) (.*/\1/p' | tr '\n' ' ')
        if [ -n "$failed" ]; then
            echo "$name: caught by $failed"
        else
            echo "$name: SURVIVED ($suites)"
            survived=1
        fi
    fi
    git apply -R "$p" && applied=""
done
cmake --build "$build" -j2 >/dev/null 2>&1 # leave the build as the tree is
exit $survived

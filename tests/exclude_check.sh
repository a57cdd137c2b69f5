#!/bin/sh
# CBUS_EXCLUDE leaves any consumers/ or tools/ folder out, with the tests that
# run its programs (cbus_tests_need): configuring with every one of them left
# out at once must succeed, so no test or tool names a target that is gone.
# Configure only (a few seconds): what is left builds as in every other build.
src=${1:?usage: exclude_check.sh SOURCE_DIR}
names=$(for d in "$src"/consumers/*/CMakeLists.txt "$src"/tools/*/CMakeLists.txt; do
          n=$(basename "$(dirname "$d")")
          case $n in daemon|events) ;; *) printf '%s;' "$n" ;; esac # libraries, not excludable
        done)
dir=$(mktemp -d /tmp/cbus-exclude.XXXXXX) || exit 1
trap 'rm -rf "$dir"' EXIT
if ! cmake -S "$src" -B "$dir" "-DCBUS_EXCLUDE=${names%;}" >"$dir.log" 2>&1; then
    cat "$dir.log"
    rm -f "$dir.log"
    echo "exclude_check: configuring with CBUS_EXCLUDE=${names%;} failed"
    exit 1
fi
grep 'left out' "$dir.log"
rm -f "$dir.log"
echo "exclude_check: configured with CBUS_EXCLUDE=${names%;}"

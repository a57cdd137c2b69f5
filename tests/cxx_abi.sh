#!/usr/bin/env bash
# The public headers are usable from C++ (issue 13 item 3): with g++ and
# clang++, each header alone compiles under -std=c++17 -Wall -Wextra
# -Wpedantic -Werror (and under C11), and examples/instrument.cpp builds
# against libcbus.a and runs on a real bus that cbusctl then reads back.
# Usage: cxx_abi.sh BUILD_DIR SOURCE_DIR CBUSCTL
# A missing compiler skips (77), or fails under CBUS_TEST_STRICT=1.
set -euo pipefail
build=$1 src=$2 cbusctl=$3
tmp=$(mktemp -d /tmp/cbus-cxx.XXXXXX)
bus=cxx$$
trap '"$cbusctl" destroy "$bus" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

missing=()
for cxx in g++ clang++; do command -v "$cxx" >/dev/null || missing+=("$cxx"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CBUS_TEST_STRICT:-0}" = 1 ]; then
    echo "cxx_abi: CBUS_TEST_STRICT=1 and ${missing[*]} missing (scripts/deps.sh installs clang)" >&2
    exit 1
  fi
  echo "cxx_abi: skipped: ${missing[*]} not installed (scripts/deps.sh)" >&2
  exit 77
fi

fail=0
for h in "$src"/include/cbus/*.h; do
  hn=$(basename "$h")
  printf '#include <cbus/%s>\n#include <cbus/%s>\nint main(void) { return 0; }\n' "$hn" "$hn" \
    > "$tmp/alone.cpp"
  cp "$tmp/alone.cpp" "$tmp/alone.c"
  for cxx in g++ clang++; do
    if ! "$cxx" -std=c++17 -Wall -Wextra -Wpedantic -Werror -I"$src/include" \
         -c "$tmp/alone.cpp" -o "$tmp/alone.o"; then
      echo "cxx_abi: $hn alone does not compile with $cxx -std=c++17" >&2
      fail=1
    fi
  done
  if ! cc -std=c11 -Wall -Wextra -Wpedantic -Werror -I"$src/include" -c "$tmp/alone.c" \
       -o "$tmp/alone.o"; then
    echo "cxx_abi: $hn alone does not compile as C11" >&2
    fail=1
  fi
done
[ $fail = 0 ] || exit 1

"$cbusctl" create "$bus" >/dev/null
want=7
for cxx in g++ clang++; do
  "$cxx" -std=c++17 -Wall -Wextra -Wpedantic -Werror -I"$src/include" \
    "$src/examples/instrument.cpp" "$build/libcbus.a" -pthread -o "$tmp/instrument-$cxx"
  out=$("$tmp/instrument-$cxx" "$bus")
  echo "$cxx: $out"
  echo "$out" | grep -q "status 200, emitted 7, dropped 0" ||
    { echo "cxx_abi: $cxx build of instrument.cpp did not emit 7 events" >&2; exit 1; }
  n=$("$cbusctl" tail "$bus" --oldest --count $want --json | grep -c '"kind"')
  [ "$n" = $want ] || { echo "cxx_abi: tail saw $n events, want $want" >&2; exit 1; }
  want=$((want + 7))
done
echo "cxx_abi: 2 compilers, every header alone, instrument.cpp ran on a real bus"

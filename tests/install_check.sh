#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then build the README's example
# against the installed headers, library and pkg-config file, and run it on a
# bus made by the installed cbusctl.  Usage: install_check.sh BUILD_DIR SOURCE_DIR
#
# The check runs in a child; the parent then makes sure the child's cleanup
# left nothing behind (no /dev/shm segment of its bus, no install prefix):
# the cleanup once removed the prefix before calling the installed cbusctl to
# destroy the bus, so every run leaked a segment.
set -euo pipefail
if [ "${CBUS_INSTALL_CHECK_INNER:-0}" != 1 ]; then
  bus=inst$$
  prefix=$(mktemp -d /tmp/cbus-install.XXXXXX)
  rc=0
  CBUS_INSTALL_CHECK_INNER=1 CBUS_INSTALL_CHECK_BUS=$bus CBUS_INSTALL_CHECK_PREFIX=$prefix \
    "$0" "$@" || rc=$?
  if [ -e "/dev/shm/cbus.$bus" ]; then
    echo "install_check: cleanup left /dev/shm/cbus.$bus behind" >&2
    rm -f "/dev/shm/cbus.$bus"
    rc=1
  fi
  if [ -e "$prefix" ]; then
    echo "install_check: cleanup left $prefix behind" >&2
    rm -rf "$prefix"
    rc=1
  fi
  exit $rc
fi
build=$1 src=$2
bus=$CBUS_INSTALL_CHECK_BUS prefix=$CBUS_INSTALL_CHECK_PREFIX
# The bus first: it is destroyed by the installed cbusctl, inside the prefix.
trap '"$prefix/bin/cbusctl" destroy "$bus" >/dev/null 2>&1 || true; rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/cbus/producer.h include/cbus/layout.h lib/pkgconfig/cbus.pc bin/cbusctl \
         bin/cbus-cost bin/cbus-audit bin/cbus-export bin/cbus-ratelimit \
         lib/systemd/system/cbus-bus@.service lib/systemd/system/cbus-cost@.service \
         bin/cbus-history bin/cbus-web \
         etc/cbus/cost.ini etc/cbus/audit.ini etc/cbus/export.ini etc/cbus/ratelimit.ini \
         etc/cbus/history.ini etc/cbus/web.ini share/cbus/model_prices_and_context_window.json; do
  [ -e "$prefix/$f" ] || { echo "install_check: $f was not installed" >&2; exit 1; }
done
ls "$prefix"/lib/libcbus.so* >/dev/null
# Installed once: no second copy of a config or of the price table.
extra=$(cd "$prefix" && find share etc -name '*.ini' -o -name 'model_prices*.json' | sort |
        grep -v -x -e 'etc/cbus/[a-z]*\.ini' -e 'share/cbus/model_prices_and_context_window\.json' || true)
[ -z "$extra" ] || { echo "install_check: installed twice or astray: $extra" >&2; exit 1; }
# The installed daemons start from the prefix; their configs keep no %S of a
# checkout (state under /var/lib/cbus).
for d in cost audit export ratelimit history web; do
  "$prefix/bin/cbus-$d" --help >/dev/null 2>&1 || { echo "install_check: cbus-$d --help failed" >&2; exit 1; }
done
if grep -n '^[^#]*%S' "$prefix"/etc/cbus/*.ini >&2; then
  echo "install_check: an installed config keeps %S" >&2; exit 1
fi
# Made from consumers/<d>/<d>.ini.in: every @VAR@ filled in, nothing of the
# checkout or the build tree named, each path the installed one.
if grep -n '^[^#]*@' "$prefix"/etc/cbus/*.ini >&2; then
  echo "install_check: an installed config keeps a template @VAR@" >&2; exit 1
fi
if grep -n -F -e "$(cd "$src" && pwd -P)" -e "$(cd "$build" && pwd -P)" "$prefix"/etc/cbus/*.ini >&2; then
  echo "install_check: an installed config names the checkout or the build tree" >&2; exit 1
fi
want() { # FILE REGEX WHAT
  grep -q -E "$2" "$prefix/etc/cbus/$1" ||
    { echo "install_check: the installed $1 does not name $3 ($2)" >&2; exit 1; }
}
table='/.*/share/cbus/model_prices_and_context_window\.json'
want cost.ini "^file = $table( |$)" "the installed price table"
want history.ini "^file = $table( |$)" "the installed price table"
want cost.ini '^dir = /var/lib/cbus/cost/%b( |$)' "the unit's StateDirectory"
want cost.ini '^textfile = /var/lib/cbus/cost/%b/' "the unit's StateDirectory"
want export.ini '^dir = /var/lib/cbus/export/spool( |$)' "the unit's StateDirectory"
want export.ini '^file = /var/lib/cbus/export/status\.json( |$)' "the unit's StateDirectory"
want history.ini '^path = /var/lib/cbus/history/%b\.db( |$)' "the unit's StateDirectory"
want audit.ini '^dir = /var/log/cbus/audit( |$)' "the unit's LogsDirectory"
# The installed daemons accept their installed configs (those that can check one).
"$prefix/bin/cbus-ratelimit" --check --config "$prefix/etc/cbus/ratelimit.ini" >/dev/null ||
  { echo "install_check: cbus-ratelimit --check refuses the installed ratelimit.ini" >&2; exit 1; }
"$prefix/bin/cbus-export" --check --config "$prefix/etc/cbus/export.ini" >/dev/null ||
  { echo "install_check: cbus-export --check refuses the installed export.ini" >&2; exit 1; }
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cc -std=c11 -Wall -Werror "$src/examples/instrument.c" $(pkg-config --cflags cbus) \
   -L"$prefix/lib" -Wl,-rpath,"$prefix/lib" $(pkg-config --libs cbus) -o "$prefix/instrument"
"$prefix/bin/cbusctl" create "$bus" >/dev/null
out=$("$prefix/instrument" "$bus")
echo "$out"
echo "$out" | grep -q "status 200, emitted 7, dropped 0"
n=$("$prefix/bin/cbusctl" tail "$bus" --oldest --count 7 --json | wc -l)
[ "$n" = 7 ] || { echo "install_check: tail saw $n events, want 7" >&2; exit 1; }
echo "install_check: 1 passed, 0 failed"

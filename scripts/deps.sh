#!/usr/bin/env bash
# Installs the Debian 12 packages cbus needs to build, test and run the demo.
# As root it runs apt-get itself; otherwise it prints the exact command.
set -euo pipefail
PKGS=(build-essential cmake pkg-config liburing-dev libmsgpack-dev libcurl4-openssl-dev
      libcriterion-dev libssl-dev libcjson-dev zlib1g-dev python3 python3-msgpack
      stress-ng openssl python3-venv)
PKGS+=(libmicrohttpd-dev) # the daemons' HTTP server (consumers/daemon/httpd.c)
PKGS+=(libsqlite3-dev) # cbus-history: conversations and messages in SQLite (WAL, FTS5)
PKGS+=(prometheus)  # promtool: tests/cost check the exposition with it
PKGS+=(nodejs)      # node >= 20, npm and /usr/include/node: bindings/node builds and tests with them
PKGS+=(clang)       # clang++: tests/cxx_headers.sh compiles the public headers and examples/ as C++
PKGS+=(libhiredis-dev redis-server) # fleet state in Redis (consumers/daemon/cluster.c); tests start redis-server
PKGS+=(chromium)    # headless: tests/web/browser drives Debian's browser (never a downloaded one)
PKGS+=("$@")
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "cbus: installing missing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "cbus: missing Debian packages. Install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

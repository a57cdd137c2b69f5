#!/usr/bin/env bash
# Makes (or reuses) the test venv at build/venv with tests/requirements.txt
# installed, and prints the path of its python on stdout (everything else
# goes to stderr).  scripts/test.sh passes that path to the suites as
# CBUS_TEST_PYTHON.  Reuse: the venv is kept while requirements.txt is
# unchanged (a stamp holds its hash); otherwise pip brings it up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/venv
req=tests/requirements.txt
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  echo "cbus: creating the test venv in $venv" >&2
  rm -rf "$venv"
  mkdir -p build
  "$py" -m venv "$venv" >&2
fi
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "cbus: installing $req into $venv" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" >&2
  echo "$want" >"$venv/.requirements.sha256"
fi
echo "$(cd "$venv" && pwd)/bin/python"

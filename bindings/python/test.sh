#!/usr/bin/env bash
# The Python binding's stage of scripts/test.sh: builds the package from this
# checkout into the test venv (scripts/venv.sh makes it) and runs its pytest
# suite.  The build compiles the library's sources (setup.py): about 10 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${CBUS_TEST_PYTHON:-$(scripts/venv.sh)}
echo "=== cbus: python package: pip install ./bindings/python"
"$py" -m pip install --disable-pip-version-check -q --force-reinstall \
  --no-deps ./bindings/python
"$py" -m pip install --disable-pip-version-check -q --no-deps -r bindings/python/requirements-nodeps.txt
# Run from outside the source tree so the installed package is the one tested.
cd /tmp && "$py" -m pytest -q -p no:cacheprovider "$OLDPWD/bindings/python/tests"

import itertools
import os
import re
import signal
import subprocess
import time

import pytest

import cbus

_n = itertools.count()


@pytest.fixture
def bus():
    """A fresh bus of its own per test, destroyed after."""
    name = "pyt%d.%d" % (os.getpid(), next(_n))
    cbus.destroy_bus(name)
    cbus.create_bus(name, capacity=4096)
    yield name
    cbus.destroy_bus(name)


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
STRICT = os.environ.get("CBUS_TEST_STRICT") == "1"


def history_bin():
    cands = [os.environ.get("CBUS_HISTORY_BIN", "")] + [
        os.path.join(ROOT, d, "consumers/history/cbus-history") for d in ("build/release", "build/dev")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    msg = "cbus-history not built (set CBUS_HISTORY_BIN or build build/release)"
    if STRICT:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def history(bus, tmp_path):
    """The real daemon on the test's bus, with its API on a free loopback port."""
    log = tmp_path / "history.log"
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with open(log, "w") as f:
        p = subprocess.Popen([history_bin(), "--bus", bus, "--db", str(state / "h.db"),
                              "--listen", "127.0.0.1:0"], stdout=f, stderr=subprocess.STDOUT)
    try:
        port = None
        end = time.time() + 15
        while time.time() < end and port is None:
            m = re.search(r"API http://127\.0\.0\.1:(\d+)/", log.read_text())
            port = int(m.group(1)) if m else None
            if port is None:
                assert p.poll() is None, log.read_text()
                time.sleep(0.05)
        assert port, log.read_text()
        yield "http://127.0.0.1:%d" % port, state / "h.db"
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0, log.read_text()



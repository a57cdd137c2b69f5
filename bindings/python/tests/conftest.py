import os
import itertools

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

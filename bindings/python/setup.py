# The extension compiles the library's own sources (bus/*.c producer/*.c, two
# directories up) into cbus/_cbus.so with hidden visibility: no libcbus.so
# and no CMake at install time.  pip builds a local directory in place
# (pip >= 21.3), so the relative paths hold for `pip install ./bindings/python`
# and `pip wheel ./bindings/python`.
import glob
import os

from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.normpath(os.path.join(here, "..", ".."))


def rel(path):
    return os.path.relpath(path, here)


lib = sorted(glob.glob(os.path.join(root, "bus", "*.c")) +
             glob.glob(os.path.join(root, "producer", "*.c")))
if not lib or not os.path.isfile(os.path.join(root, "include", "cbus", "cbus.h")):
    raise SystemExit(
        "cbus: the library sources (bus/, producer/, include/) are not at %s; build the "
        "package from a cbus checkout (pip install ./bindings/python)" % root)

# Headers as depends: setuptools rebuilds a module older than any of them
# (it compares only the listed files' times, so a changed struct in a header
# would otherwise leave a stale module from an earlier in-place build).
headers = sorted(glob.glob(os.path.join(root, "include", "cbus", "*.h")) +
                 glob.glob(os.path.join(root, "bus", "*.h")) +
                 glob.glob(os.path.join(root, "producer", "*.h")))

setup(ext_modules=[Extension(
    "cbus._cbus",
    sources=["cbus/_cbus.c"] + [rel(p) for p in lib],
    depends=[rel(p) for p in headers + [__file__]],
    include_dirs=[rel(os.path.join(root, "include")), rel(os.path.join(root, "bus")),
                  rel(os.path.join(root, "producer"))],
    # No CBUS_BUILDING_LIBRARY: CBUS_API stays empty, so -fvisibility=hidden
    # keeps every cbus_* symbol inside the module (only PyInit__cbus is
    # exported).  An exported cbus_* could be interposed by another libcbus.so
    # already in the process, of another version, with other struct layouts.
    define_macros=[("_GNU_SOURCE", None)],
    extra_compile_args=["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra",
                        "-Wno-missing-field-initializers", "-Wno-unused-parameter"],
    extra_link_args=["-pthread"],
)])

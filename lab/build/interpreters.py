"""Which Python runs a pystack node: CPython (the interpreter running the lab) or PyPy.

A node's `python: pypy` (topology) starts its stack under PyPy, whose JIT runs the stack's per-segment
code several times faster than CPython (docs/performance.md). The stack keeps to the language of
Debian's PyPy, 3.9 (`stack.compat`). The PyPy used is, in order:

* `$NSLAB_PYPY`, a PyPy interpreter given by path;
* `<project>/.venv-pypy/bin/python`, the environment `make pypy` builds (Debian's pypy3 with
  python-pytun).

Either must import pytun, which opens the node's TAP; `lab up` checks that before it builds anything.

A PyPy node's heap may grow to `PYPY_GC_MIN` before its first major collection (`node_environment`;
`$PYPY_GC_MIN` in the lab's environment overrides it). The bulk paths allocate a large byte string per
frame and per read; PyPy frees such strings only in a major collection and starts one whenever they add
up to a fraction of a small heap, so with PyPy's default a receiving node spent 38 % of its time in
major-collection steps and moved 3.2 Gbit/s (CPython 8.9); with 256 MB it moves 6.5 for a resident
size of 390 MB (PyPy's default: 150 MB; CPython: 35 MB), docs/performance.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PYTHONS = ("cpython", "pypy")
PYPY_ENV = "NSLAB_PYPY"
PROJECT = Path(__file__).resolve().parents[2]  # the checkout holding lab/ and stack/
PYPY_VENV = PROJECT / ".venv-pypy" / "bin" / "python"
PROBE_SECONDS = 20.0  # a PyPy start and one import: about 0.2 s on the reference machine
PYPY_GC_MIN = "256MB"
HEAP_SIZE = re.compile(r"[1-9][0-9]{0,12}(KB|MB|GB)?")  # what PyPy's GC reads (it ignores anything else)
PROBE = "import platform, pytun; assert platform.python_implementation() == 'PyPy'"


class InterpreterMissing(Exception):
    """The Python a node asks for is not on this machine (or cannot open a TAP)."""


def pypy_path() -> Path:
    """Where the PyPy for nodes should be (it may be missing: see `check_pypy`)."""
    given = os.environ.get(PYPY_ENV)
    return Path(given) if given else PYPY_VENV


def node_interpreter(python: str) -> str:
    """The executable that runs a node whose topology says `python`."""
    if python == "pypy":
        return str(pypy_path())
    return sys.executable


def node_environment(python: str) -> dict[str, str]:
    """What a node's interpreter finds in its environment beyond the lab's own (the module docstring)."""
    if python == "pypy":
        return {"PYPY_GC_MIN": os.environ.get("PYPY_GC_MIN", PYPY_GC_MIN)}
    return {}


def check_pypy() -> str:
    """The PyPy's path, after checking that it starts, is PyPy and imports pytun; else InterpreterMissing
    with what to do, in one line."""
    given_heap = os.environ.get("PYPY_GC_MIN")
    if given_heap is not None and not HEAP_SIZE.fullmatch(given_heap):
        raise InterpreterMissing(f"python: pypy: $PYPY_GC_MIN {given_heap[:40]!r} is not a size "
                                 "(bytes, or a number with KB, MB or GB: 256MB)")
    path = pypy_path()
    source = f"${PYPY_ENV}" if os.environ.get(PYPY_ENV) else "make pypy"
    if not os.access(path, os.X_OK):
        hint = f"{PYPY_ENV} names {path}, which is not an executable" if os.environ.get(PYPY_ENV) else \
            f"no {path}; `make pypy` builds it (Debian's pypy3 and python-pytun)"
        raise InterpreterMissing(f"python: pypy: {hint}")
    try:
        done = subprocess.run([str(path), "-c", PROBE], capture_output=True, timeout=PROBE_SECONDS,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InterpreterMissing(f"python: pypy: {path} ({source}) did not run: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1][:200]
        raise InterpreterMissing(f"python: pypy: {path} ({source}) is not a PyPy that imports pytun: {last}")
    return str(path)

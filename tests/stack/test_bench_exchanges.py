"""benchmarks/bench_exchanges.py: both exchanges run to completion on the stack, and the kernel's figure
comes from the same run (no figure is checked against a time: benchmarks are not timed tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_exchanges.py"
PYPY = ROOT / ".venv-pypy" / "bin" / "python"
NOT_BUILT = not (ROOT / "build" / "connload").exists() and os.environ.get("CI") != "true"


@pytest.mark.skipif(NOT_BUILT, reason="build/connload is built by `make venv`")
def test_every_exchange_has_the_stack_figure_beside_the_kernel_one() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--count", "20", "--rounds", "1", "--json"],
                          capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(done.stdout)
    assert set(figures) == {"connect_close", "request_response"}
    for row in figures.values():
        assert row["stack_us"] > 0 and row["kernel_us"] > 0 and row["kernel_per_second"] > 0
        assert row["ratio"] == pytest.approx(row["kernel_us"] / row["stack_us"])


def test_one_bare_run_completes_each_exchange() -> None:
    """What valgrind counts (`--only`): the exchanges themselves, which raise if a byte went missing."""
    for case in ("connect_close", "request_response"):
        subprocess.run([sys.executable, str(BENCH), "--only", case, "--count", "5"], timeout=60, check=True)


def test_bad_counts_are_refused_with_exit_2() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--count", "1"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "--count takes 2 to 1000000" in done.stderr


def test_the_stack_side_runs_under_pypy() -> None:
    """`--python pypy`: the stack's side is measured in a PyPy process (after its JIT's warm-up rounds),
    next to the same kernel figure; this is also the stack's core running whole exchanges under PyPy."""
    if not PYPY.exists() and os.environ.get("CI") != "true":
        pytest.skip("no .venv-pypy (`make pypy` builds it)")
    done = subprocess.run([sys.executable, str(BENCH), "--python", "pypy", "--count", "20", "--rounds", "1",
                           "--json"], capture_output=True, text=True, timeout=300, check=True)
    figures = json.loads(done.stdout)
    for row in figures.values():
        assert row["stack_python"] == "pypy" and row["stack_us"] > 0 and row["kernel_us"] > 0


def test_instructions_are_not_counted_under_pypy() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--python", "pypy", "--instructions"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--instructions counts CPython's instructions" in done.stderr

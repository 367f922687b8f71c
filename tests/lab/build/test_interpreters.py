"""Which interpreter and environment a pystack node gets (no root, no PyPy needed)."""

from __future__ import annotations

import sys

import pytest

from lab.build import interpreters
from lab.build.interpreters import InterpreterMissing, check_pypy, node_environment, node_interpreter


def test_a_cpython_node_runs_the_lab_s_own_interpreter_with_nothing_added() -> None:
    assert node_interpreter("cpython") == sys.executable
    assert node_environment("cpython") == {}


def test_a_pypy_node_may_grow_its_heap_before_its_first_major_collection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYPY_GC_MIN", raising=False)
    assert node_environment("pypy") == {"PYPY_GC_MIN": interpreters.PYPY_GC_MIN}
    monkeypatch.setenv("PYPY_GC_MIN", "1GB")
    assert node_environment("pypy") == {"PYPY_GC_MIN": "1GB"}


@pytest.mark.parametrize("given", ["lots", "256 MB", "0", "-1MB", "12TB", "1" * 20])
def test_a_heap_size_pypy_would_ignore_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                               given: str) -> None:
    monkeypatch.setenv("PYPY_GC_MIN", given)
    with pytest.raises(InterpreterMissing, match=r"\$PYPY_GC_MIN .* is not a size") as caught:
        check_pypy()
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


@pytest.mark.parametrize("given", ["256MB", "1GB", "65536", "512KB"])
def test_heap_sizes_pypy_reads_pass_the_check(given: str) -> None:
    assert interpreters.HEAP_SIZE.fullmatch(given)

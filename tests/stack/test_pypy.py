"""The stack under PyPy (Debian's, Python 3.9): every module of `stack` imports there, and the few
interpreter differences `stack.compat` names behave alike on both interpreters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stack import compat

ROOT = Path(__file__).resolve().parents[2]
PYPY = ROOT / ".venv-pypy" / "bin" / "python"
NO_PYPY = not PYPY.exists() and os.environ.get("CI") != "true"

IMPORT_ALL = """
import importlib, pkgutil, platform, sys
sys.path.insert(0, sys.argv[1])
import stack
failed = []
for module in pkgutil.walk_packages(stack.__path__, "stack."):
    if ".site" in module.name:  # sitecustomize of programs run on the stack: it runs in their Python
        continue
    try:
        importlib.import_module(module.name)
    except Exception as error:
        failed.append(f"{module.name}: {type(error).__name__}: {error}")
print(platform.python_implementation())
print("\\n".join(failed))
"""


@pytest.mark.skipif(NO_PYPY, reason="no .venv-pypy (`make pypy` builds it)")
def test_every_stack_module_imports_under_pypy() -> None:
    done = subprocess.run([str(PYPY), "-c", IMPORT_ALL, str(ROOT)], capture_output=True, text=True,
                          timeout=120, check=True)
    implementation, *failed = done.stdout.splitlines()
    assert implementation == "PyPy"
    assert [line for line in failed if line] == []


def test_writev_and_join_views_keep_every_byte() -> None:
    payload = bytes(range(256)) * 300
    view = memoryview(payload)
    parts = [b"head", view[10:70000], bytearray(b"tail")]
    assert compat.join_views(parts) == b"head" + payload[10:70000] + b"tail"
    assert compat._join_copied(parts) == b"head" + payload[10:70000] + b"tail"  # PyPy's way, here too
    read, write = os.pipe()
    try:
        assert compat.writev(write, [b"ab", memoryview(b"cdef")[1:3]]) == 4
        assert compat._write_joined(write, [b"gh", memoryview(b"ij")]) == 4
        assert os.read(read, 16) == b"abdeghij"
    finally:
        os.close(read)
        os.close(write)


def test_interface_index_names_the_device_or_raises() -> None:
    assert compat.interface_index("lo") == 1
    with pytest.raises(OSError):
        compat.interface_index("nosuchdev0")


def test_within_bounds_a_wait_with_asyncio_timeout_error() -> None:
    async def scenario() -> tuple[int, bool]:
        done = await compat.within(1.0, asyncio.sleep(0, result=7))
        try:
            await compat.within(0.01, asyncio.sleep(5))
        except asyncio.TimeoutError:  # noqa: UP041 (what 3.9 raises; the same class on 3.11)
            return done, True
        return done, False

    assert asyncio.run(scenario()) == (7, True)


def test_cancelling_and_uncancel_follow_the_task() -> None:
    """A cancellation caught by the task counts as pending until taken back (3.11); before 3.11 no count
    is kept, so both read 0."""

    async def victim() -> tuple[int, int]:
        task = asyncio.current_task()
        assert task is not None
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            during = compat.cancelling(task)
            compat.uncancel(task)
            return during, compat.cancelling(task)
        return -1, -1

    async def scenario() -> tuple[int, int]:
        task = asyncio.ensure_future(victim())
        await asyncio.sleep(0)
        task.cancel()
        return await task

    expected = (1, 0) if sys.version_info >= (3, 11) else (0, 0)
    assert asyncio.run(scenario()) == expected

"""The stack under PyPy (Debian's, Python 3.9): every module of `stack` imports there, and the few
interpreter differences `stack.compat` names behave alike on both interpreters."""

from __future__ import annotations

import asyncio
import json
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


LOSSY_TRANSFER = """
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
from stack.devices.impairment import Impairment
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
lossy = Impairment(delay=0.002, loss=0.05, reorder=0.05, duplicate=0.02)
runner = Runner([a, b], [MemoryWire(a, b, lossy, lossy, seed=7)])
listener = b.socket(); listener.bind(("10.0.0.2", 80)); listener.listen()
client = a.socket(); client.connect(("10.0.0.2", 80))
server, _ = listener.accept()
client.setblocking(False); server.setblocking(False)
data = bytes(range(256)) * 8192
sent, received, eof = 0, [], False
while not eof:
    if sent < len(data):
        try:
            sent += client.send(data[sent:sent + 65536])
        except BlockingIOError:
            pass
        if sent == len(data):
            client.shutdown(1)
    try:
        chunk = server.recv(65536)
        eof = not chunk
        received.append(chunk)
    except BlockingIOError:
        runner.run_until(lambda: server.readable or (sent < len(data) and client.writable), timeout=60.0)
counters = a.counters()
print(json.dumps({"exact": hashlib.sha256(b"".join(received)).digest() == hashlib.sha256(data).digest(),
                  **{key: counters[key] for key in ("TcpRetransSegs", "TcpExtTCPSACKReorder")}}))
"""


@pytest.mark.skipif(NO_PYPY, reason="no .venv-pypy (`make pypy` builds it)")
def test_loss_recovery_runs_under_pypy() -> None:
    """RACK, SACK and D-SACK run only when segments go missing: 2 MB over a link that loses, reorders and
    duplicates arrive exact under PyPy, with retransmissions and reordering seen (a standard-library call
    newer than 3.9 there would stop the transfer with a TypeError)."""
    done = subprocess.run([str(PYPY), "-c", LOSSY_TRANSFER, str(ROOT)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    result = json.loads(done.stdout)
    assert result["exact"] is True
    assert result["TcpRetransSegs"] > 0 and result["TcpExtTCPSACKReorder"] > 0


STREAMS_EXCHANGE = """
import asyncio, hashlib, json, random, sys
sys.path.insert(0, sys.argv[1])
from stack.aio import AsyncioDriver, open_connection, start_server
from stack.api.stream_reader import READER_CLASS
from stack.devices.memory import MemoryWire
from stack.host import Host
body = random.Random(5).randbytes(3 << 20)

async def serve(reader, writer):
    line = await reader.readline()
    size = int((await reader.readuntil(b"\\r\\n\\r\\n"))[:-4])
    data = await reader.readexactly(size)
    writer.write(line + hashlib.sha256(data).hexdigest().encode() + b"\\n")
    await writer.drain()
    writer.close()

async def main():
    a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
    b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
    async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
        server = await start_server(serve, b, "10.0.0.2", 80, limit=1 << 20)
        reader, writer = await open_connection(a, "10.0.0.2", 80)
        writer.write(b"upload\\n" + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        async with server:
            pass
        return answer

answer = asyncio.run(asyncio.wait_for(main(), 60))
print(json.dumps({"reader": READER_CLASS.__name__, "answer": answer.decode(),
                  "expected": "upload\\n" + hashlib.sha256(body).hexdigest() + "\\n"}))
"""


@pytest.mark.skipif(NO_PYPY, reason="no .venv-pypy (`make pypy` builds it)")
def test_streams_under_pypy_keep_chunks_and_every_byte() -> None:
    """Under PyPy the stack's streams read through the chunk-keeping reader: a line, a head up to a blank
    line and a 3 MB body that crosses the reader's pause threshold arrive exact."""
    done = subprocess.run([str(PYPY), "-c", STREAMS_EXCHANGE, str(ROOT)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    result = json.loads(done.stdout)
    assert result["reader"] == "StackStreamReader"
    assert result["answer"] == result["expected"]


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

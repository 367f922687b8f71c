"""`lab down` treats its journal as a list of places to look, not as orders (root).

A journal that names a file outside the lab's state directory, an interface without the lab's tag,
a namespace that is not marked as the lab's, or a process outside the lab's namespaces gets none of
them removed; the lab's own objects all go. The lab lives under a private state root, so planting
things in its journal disturbs nobody else's labs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from lab.build.journal import Journal, JournalEntry
from lab.build.processes import process_start_ticks
from lab.build.state import LabState
from lab.kernel.namespaces import list_namespaces
from stack.node.paths import STATE_ROOT_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.root


@pytest.fixture
def private_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state root of this test's own (the `lab` subprocesses inherit it)."""
    root = tmp_path / "state"
    monkeypatch.setenv(STATE_ROOT_ENV, str(root))
    return root


def run_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=120,
                          cwd=PROJECT_ROOT)


def root_link_names() -> set[str]:
    with IPRoute() as ipr:
        return {link.get("ifname") for link in ipr.get_links()}


def test_down_leaves_alone_what_its_journal_names_but_is_not_the_labs(
        lab_name: str, private_root: Path, tmp_path: Path) -> None:
    up = run_lab("up", "pair", "--name", lab_name)
    assert up.returncode == 0, up.stderr
    state = LabState.for_lab(lab_name)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    beside = private_root / "beside.txt"  # under the state root, outside the lab's directory
    beside.write_text("keep")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    (state.directory / "escape").symlink_to(outside)  # a link inside the lab's directory leading out
    own_file = state.nodes_dir / "scratch.txt"
    own_file.write_text("the lab's")
    # An untagged interface in the root namespace: a lone bridge (this kernel has no dummy driver).
    dummy = f"ra{uuid.uuid4().hex[:10]}"
    foreign_namespace = f"{lab_name}-zz"  # named like the lab's, but not marked as its own
    bystander = subprocess.Popen(["sleep", "60"])  # a process in the root namespace
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=dummy, kind="bridge")
        netns.create(foreign_namespace)
        with IPRoute(netns=foreign_namespace, flags=0) as ipr:
            ipr.link("add", ifname="ra0", kind="bridge")
        planted = [
            JournalEntry("file", name=str(precious)),
            JournalEntry("file", name=f"{state.directory}/../{beside.name}"),
            JournalEntry("file", name=str(state.directory / "escape" / "victim")),
            JournalEntry("bridge", name=dummy),
            JournalEntry("veth", name=dummy, peer_namespace=foreign_namespace, peer_name="ra0"),
            JournalEntry("namespace", namespace=foreign_namespace),
            JournalEntry("tap", namespace=foreign_namespace, name="ra0"),
            JournalEntry("process", pid=bystander.pid, start_ticks=process_start_ticks(bystander.pid)),
        ]
        Journal(state.journal_path).record([*planted, JournalEntry("file", name=str(own_file))])

        down = run_lab("down", lab_name, "--json")
        assert down.returncode == 0, down.stderr
        [result] = json.loads(down.stdout)
        assert precious.read_text() == "keep" and beside.read_text() == "keep"
        assert (outside / "victim").read_text() == "keep"
        assert dummy in root_link_names()
        assert foreign_namespace in list_namespaces()
        with IPRoute(netns=foreign_namespace, flags=0) as ipr:
            assert ipr.link_lookup(ifname="ra0")
        assert bystander.poll() is None
        # ... while everything of the lab's is gone
        assert [ns for ns in list_namespaces() if ns.startswith(f"{lab_name}-")] == [foreign_namespace]
        assert not state.directory.exists()
        assert sorted(p.name for p in private_root.iterdir()) == ["beside.txt"]
        assert sorted(result["refused"]) == sorted(e.describe() for e in planted)  # and `down` says so
        assert f"file {own_file}" in result["removed"]
    finally:
        bystander.kill()
        bystander.wait(5)
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=dummy):
                ipr.link("del", index=index)
        if foreign_namespace in list_namespaces():
            netns.remove(foreign_namespace)

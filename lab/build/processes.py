"""The processes of a lab: a pystack node's stack process started by `lab up` (journaled before it
runs), and stopping what runs in a lab's namespaces when it goes down.

`python -m stack.node --settings <state dir>/nodes/<node>.json` runs inside the node's namespace.
The order matters for crash safety:

1. fork; the child enters the namespace and then blocks on a pipe, before it execs;
2. the parent journals the child's pid and start time (as `record_process` does for other programs);
3. the parent releases the child, which execs the stack.

If `lab up` dies between 1 and 3 (SIGKILL included), the pipe's write end closes with it, the
child reads end-of-file and exits without ever running the stack, so no unjournaled stack can
exist. `down` stops journaled processes by pid *and* start time (a reused pid is never
signalled), then anything still in the lab's namespaces (`stop_namespace_processes`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from lab.build.control import StackClient, StackControlError, control_socket_path, wait_for_hello
from lab.build.journal import Journal, JournalEntry, read_journal
from lab.build.signals import raise_if_stopping
from lab.build.state import LabError, LabState, lab_tag
from lab.kernel.namespaces import is_mounted_namespace
from lab.kernel.netlink import Netlink
from lab.topology.plan import LabPlan, NodePlan
from stack.devices.namespace import namespace_path, open_namespace, setns

STOP_GRACE_SECONDS = 1.0  # SIGTERM first; SIGKILL for what still runs after this
READY_TIMEOUT_SECONDS = 20.0  # interpreter start, imports, TAP open; ~0.5 s on the reference machine
NODE_MODULE = "stack.node"
# Another implementation of the control protocol can stand in for the stack (a protocol double in
# tests of the lab's process handling, or a build of the stack under a profiler).
NODE_MODULE_ENV = "NSLAB_STACK_NODE_MODULE"


class NodeStartFailed(LabError):
    """A node's stack process did not come up (it exited, or never answered `hello`)."""

    exit_code = 1


@dataclass(frozen=True)
class NodeProcess:
    node: str
    pid: int
    start_ticks: int | None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3 on), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: with the pid, it names one process for its whole life."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def is_running(pid: int, start_ticks: int | None) -> bool:
    """The very process journaled (same pid, same start time; None: any) exists and is not a zombie.

    A zombie no longer pins a namespace. Never reaps: a child's exit status is its parent's to read.
    """
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z" and (start_ticks is None or int(fields[19]) == start_ticks)


def reap(pid: int) -> None:
    """Collect the exit status of a child of this process, so it does not linger as a zombie."""
    with suppress(ChildProcessError):  # not our child (started by an earlier `lab up`): init reaps it
        os.waitpid(pid, os.WNOHANG)


def node_module() -> str:
    return os.environ.get(NODE_MODULE_ENV) or NODE_MODULE


def node_command(settings_path: Path) -> list[str]:
    return [sys.executable, "-m", node_module(), "--settings", str(settings_path)]


def node_log_path(state: LabState, node: str) -> Path:
    return state.nodes_dir / f"{node}.log"


def spawn_node(state: LabState, node: NodePlan, journal: Journal) -> NodeProcess:
    """Fork the node's stack process, journal it, then let it exec (see the module docstring)."""
    settings = state.node_settings_path(node.name)
    argv = node_command(settings)
    log_fd = os.open(node_log_path(state, node.name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    namespace_fd = open_namespace(namespace_path(node.namespace))
    gate_read, gate_write = os.pipe()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    project = str(Path(__file__).resolve().parents[2])  # the checkout holding lab/ and stack/
    env["PYTHONPATH"] = project + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        pid = os.fork()
        if pid == 0:  # child: only async-signal-safe-ish steps until exec
            _child(argv, env, log_fd, namespace_fd, gate_read, gate_write)
        os.close(gate_read)
        gate_read = -1
        entry = JournalEntry("process", namespace=node.namespace, name=node.name, pid=pid,
                             start_ticks=process_start_ticks(pid))
        journal.record([entry])
        os.write(gate_write, b"go")
        return NodeProcess(node.name, pid, entry.start_ticks)
    finally:
        for fd in (log_fd, namespace_fd, gate_write, gate_read):
            if fd >= 0:
                os.close(fd)


def _child(argv: list[str], env: dict[str, str], log_fd: int, namespace_fd: int, gate_read: int,
           gate_write: int) -> None:
    """In the forked child: leave the terminal's session, enter the namespace, wait, exec."""
    code = 127
    try:
        os.close(gate_write)
        os.setsid()  # Ctrl-C at the terminal of `lab up` must not reach the stack afterwards
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        try:
            setns(namespace_fd, "enter the node's namespace")
        except OSError:
            os.write(log_fd, b"lab: cannot enter the node's namespace\n")
            os._exit(code)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.dup2(gate_read, 3)  # every other inherited descriptor goes: the lab's lock file above all
        os.closerange(4, 1 << 20)
        if os.read(3, 2) != b"go":  # the parent died before journaling us: never run
            os._exit(1)
        os.close(3)
        os.execve(argv[0], argv, env)
    except BaseException:
        os._exit(code)
    os._exit(code)


def wait_ready(state: LabState, started: list[NodeProcess], *,
               timeout: float = READY_TIMEOUT_SECONDS) -> dict[str, dict]:
    """Wait until every started node answers `hello` on its control socket; its answers by node."""
    answers: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    for process in started:
        client = StackClient(control_socket_path(state.name, process.node, state.root), timeout=2.0)
        try:
            answers[process.node] = wait_for_hello(
                client, max(0.1, deadline - time.monotonic()),
                alive=lambda p=process: is_running(p.pid, p.start_ticks))
        except StackControlError as error:
            reap(process.pid)
            raise NodeStartFailed(f"stack process of node {process.node} (pid {process.pid}): {error}; "
                                  f"its log: {node_log_path(state, process.node)}"
                                  f"{_log_tail(node_log_path(state, process.node))}") from None
        finally:
            client.close()
    return answers


def _log_tail(path: Path) -> str:
    """The log's last non-empty line, to put the node's own words into the one-line error."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f" (last line: {lines[-1].strip()[:200]})" if lines else ""


def start_nodes(state: LabState, plan: LabPlan, journal: Journal,
                nodes: list[NodePlan] | None = None) -> dict[str, dict]:
    """Start the stack process of each pystack node with `process` true; wait for all of them."""
    wanted = nodes if nodes is not None else process_nodes(plan)
    started = []
    for node in wanted:
        started.append(spawn_node(state, node, journal))
        raise_if_stopping()  # between two nodes: each started one is journaled already
    return wait_ready(state, started)


def process_nodes(plan: LabPlan) -> list[NodePlan]:
    return [node for node in plan.nodes if node.kind == "pystack" and node.process]


def journaled_processes(state: LabState) -> dict[str, JournalEntry]:
    """The latest journaled process of each node (a restart journals a new one)."""
    latest: dict[str, JournalEntry] = {}
    for entry in read_journal(state.journal_path).entries:
        if entry.kind == "process" and entry.name:
            latest[entry.name] = entry
    return latest


def dead_nodes(state: LabState, plan: LabPlan) -> list[tuple[NodePlan, JournalEntry | None]]:
    """Nodes whose stack process should run and does not (with the journal entry of the dead one)."""
    latest = journaled_processes(state)
    dead = []
    for node in process_nodes(plan):
        entry = latest.get(node.name)
        if entry is None or entry.pid is None or not is_running(entry.pid, entry.start_ticks):
            if entry is not None and entry.pid is not None:
                reap(entry.pid)
            dead.append((node, entry))
    return dead


def restart_dead_nodes(state: LabState, plan: LabPlan) -> list[str]:
    """Start again every node process found dead; one message per restart (what `lab up` prints)."""
    dead = dead_nodes(state, plan)
    if not dead:
        return []
    for node, _ in dead:
        stale = control_socket_path(state.name, node.name, state.root)
        if stale.exists():
            stale.unlink()
    start_nodes(state, plan, Journal(state.journal_path), [node for node, _ in dead])
    return [f"restarted the stack process of {node.name} (pid {entry.pid} was gone)" if entry and entry.pid
            else f"started the stack process of {node.name} (none was recorded)" for node, entry in dead]


# --------------------------------------------------------------------------------------------
# Other programs in a lab, and stopping everything when the lab goes down
# --------------------------------------------------------------------------------------------


def record_process(name: str, namespace: str, pid: int, *, root: Path | None = None) -> None:
    """Journal a process the lab started in one of its namespaces, so `down` stops it.

    Call it right after the process is spawned (its pid exists only then), before it serves.
    """
    state = LabState.for_lab(name, root)
    Journal(state.journal_path).record(
        [JournalEntry("process", namespace=namespace, pid=pid, start_ticks=process_start_ticks(pid))]
    )


def stop_journaled_process(pid: int | None, start_ticks: int | None) -> bool:
    """Stop the journaled process if it is still the very one (same start time): a reused pid is spared."""
    ticks = process_start_ticks(pid) if pid is not None else None
    if pid is None or ticks is None or ticks != start_ticks:
        return False
    return bool(terminate([pid]))


def namespace_pids(namespaces: set[str]) -> dict[str, list[int]]:
    """Processes whose network namespace is one of `namespaces` (matched by nsfs inode)."""
    inodes: dict[tuple[int, int], str] = {}
    for namespace in namespaces:
        if is_mounted_namespace(namespace):
            st = os.stat(namespace_path(namespace))
            inodes[(st.st_dev, st.st_ino)] = namespace
    found: dict[str, list[int]] = {}
    if not inodes:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        namespace = inodes.get((st.st_dev, st.st_ino))
        if namespace is not None:
            found.setdefault(namespace, []).append(int(entry))
    return found


def stop_namespace_processes(nl: Netlink, lab: str, namespaces: set[str]) -> None:
    """Stop processes left in the lab's namespaces (servers from `lab exec`, stacks): they pin them.

    Only namespaces carrying the lab's marker are searched, and this process is never signalled.
    """
    tag = lab_tag(lab)
    own = {ns for ns in namespaces if nl.namespace_marker(ns) == tag}
    pids = [pid for group in namespace_pids(own).values() for pid in group if pid != os.getpid()]
    terminate(pids)


def terminate(pids: list[int]) -> list[int]:
    """SIGTERM, a bounded grace period, then SIGKILL. Returns the pids that were signalled."""
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    alive = list(signalled)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if is_running(pid, None)]
        if alive:
            time.sleep(0.01)
    for pid in alive:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return signalled

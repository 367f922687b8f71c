"""The processes of a lab: a pystack node's stack process started by `lab up` (journaled before it
runs), and stopping what runs in a lab's namespaces when it goes down.

`python -m stack.node --settings <state dir>/nodes/<node>.json` runs inside the node's namespace.
The order matters for crash safety:

1. fork; the child enters the namespace and then blocks on a pipe, before it execs;
2. the parent journals the child's pid and start time (as `record_process` does for other programs);
3. the parent releases the child, which execs the stack.

If `lab up` dies between 1 and 3 (SIGKILL included), the pipe's write end closes with it, the
child reads end-of-file and exits without ever running the stack, so no unjournaled stack can
exist. `down` stops journaled processes by pid *and* start time through a pidfd (a reused pid is
never signalled, see `lab.build.pids`), and only inside the lab's own namespaces, then anything still
in those namespaces (`stop_namespace_processes`). A dead node (`dead_nodes`) is started again by the
next `lab up` with the same settings file, so with the same apps (`restart_dead_nodes`).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from lab.build.control import StackClient, StackControlError, control_socket_path, wait_for_hello
from lab.build.interpreters import node_environment, node_interpreter
from lab.build.journal import Journal, JournalEntry, read_journal
from lab.build.node_exits import iso_time, log_facts, observe_exit
from lab.build.pids import is_running, open_journaled, process_start_ticks, reap, stop_pidfd
from lab.build.signals import raise_if_stopping
from lab.build.state import LabError, LabState, lab_tag
from lab.build.statefiles import open_state_file, remove_inside
from lab.build.wiring import Forwarder
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
FORWARDER_MODULE = "stack.node.forwarder"  # a link's userspace impairment (`lab.build.wiring.Forwarder`)


class NodeStartFailed(LabError):
    """A node's stack process did not come up (it exited, or never answered `hello`)."""

    exit_code = 1


@dataclass(frozen=True)
class NodeProcess:
    node: str
    pid: int
    start_ticks: int | None


def node_module() -> str:
    return os.environ.get(NODE_MODULE_ENV) or NODE_MODULE


def node_command(settings_path: Path, python: str = "cpython") -> list[str]:
    """The node's stack under its interpreter (`lab.build.interpreters`)."""
    return [node_interpreter(python), "-m", node_module(), "--settings", str(settings_path)]


def spawn_node(state: LabState, node: NodePlan, journal: Journal) -> NodeProcess:
    """Fork the node's stack process, journal it, then let it exec (see the module docstring)."""
    command = node_command(state.node_settings_path(node.name), node.python)
    return spawn_process(state, node.name, node.namespace, command, journal, node_environment(node.python))


def forwarder_command(settings_path: Path) -> list[str]:
    return [sys.executable, "-m", FORWARDER_MODULE, "--settings", str(settings_path)]


def spawn_forwarder(state: LabState, forwarder: Forwarder, journal: Journal) -> NodeProcess:
    """Fork a link's forwarder process in the link's namespace, journaled like a node's stack."""
    return spawn_process(state, forwarder.name, forwarder.namespace,
                         forwarder_command(state.node_settings_path(forwarder.name)), journal)


def spawn_process(state: LabState, name: str, namespace: str, argv: list[str],
                  journal: Journal, environment: dict[str, str] | None = None) -> NodeProcess:
    """Fork `argv` into `namespace`, journal it under `name`, then let it exec (the module docstring)."""
    log_fd = open_state_file(state.node_log_path(name), os.O_WRONLY | os.O_APPEND, create=True)
    namespace_fd = open_namespace(namespace_path(namespace))
    gate_read, gate_write = os.pipe()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(environment or {}))
    project = str(Path(__file__).resolve().parents[2])  # the checkout holding lab/ and stack/
    env["PYTHONPATH"] = project + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        pid = os.fork()
        if pid == 0:  # child: only async-signal-safe-ish steps until exec
            _child(argv, env, log_fd, namespace_fd, gate_read, gate_write)
        os.close(gate_read)
        gate_read = -1
        entry = JournalEntry("process", namespace=namespace, name=name, pid=pid,
                             start_ticks=process_start_ticks(pid))
        journal.record([entry])
        os.write(gate_write, b"go")
        return NodeProcess(name, pid, entry.start_ticks)
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
            raise NodeStartFailed(f"{process_label(process.node)} (pid {process.pid}): {error}; "
                                  f"its log: {state.node_log_path(process.node)}"
                                  f"{_log_tail(state, process.node)}") from None
        finally:
            client.close()
    return answers


def process_label(name: str) -> str:
    """"stack process of node s1", or "forwarder of link 0" (node names never look like link<N>)."""
    if re.fullmatch(r"link[0-9]+", name):
        return f"forwarder of link {name[4:]}"
    return f"stack process of node {name}"


def _log_tail(state: LabState, node: str) -> str:
    """The log's last non-empty line, to put the node's own words into the one-line error."""
    _, last_line, _ = log_facts(state, node)
    return f" (last line: {last_line})" if last_line else ""


def start_nodes(state: LabState, plan: LabPlan, journal: Journal,
                nodes: list[NodePlan] | None = None) -> dict[str, dict]:
    """Start the stack process of each pystack node with `process` true; wait for all of them."""
    wanted = nodes if nodes is not None else process_nodes(plan)
    started = []
    for node in wanted:
        started.append(spawn_node(state, node, journal))
        raise_if_stopping()  # between two nodes: each started one is journaled already
    return wait_ready(state, started)


def start_forwarders(state: LabState, forwarders: list[Forwarder], journal: Journal) -> dict[str, dict]:
    """Start the forwarder process of each forwarded link; wait until each answers `hello`."""
    return wait_ready(state, [spawn_forwarder(state, forwarder, journal) for forwarder in forwarders])


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
    """Nodes whose stack process should run and does not, with the journal entry of the dead one.

    Dead means: the journaled pid is gone, is a zombie, or now names another process (its start
    time differs); see `lab.build.pids`.
    """
    latest = journaled_processes(state)
    dead = []
    for node in process_nodes(plan):
        entry = latest.get(node.name)
        if entry is None or entry.pid is None or not is_running(entry.pid, entry.start_ticks):
            dead.append((node, entry))
    return dead


def restart_dead_nodes(state: LabState, plan: LabPlan) -> list[str]:
    """Start again every node process found dead, with the apps its settings file names; one message
    per restart (what `lab up` prints), saying how the dead one ended."""
    dead = dead_nodes(state, plan)
    messages = [_restart_message(state, node.name, entry) for node, entry in dead]
    if dead:
        start_nodes(state, plan, Journal(state.journal_path), [node for node, _ in dead])
    return messages


def restart_dead_forwarders(state: LabState, forwarders: list[Forwarder]) -> list[str]:
    """Start again every link forwarder found dead (from its settings file, so with the impairments
    last set); one message per restart."""
    latest = journaled_processes(state)
    dead = [f for f in forwarders if (entry := latest.get(f.name)) is None or entry.pid is None
            or not is_running(entry.pid, entry.start_ticks)]
    messages = [_restart_message(state, forwarder.name, latest.get(forwarder.name)) for forwarder in dead]
    if dead:
        start_forwarders(state, dead, Journal(state.journal_path))
    return messages


def _restart_message(state: LabState, name: str, entry: JournalEntry | None) -> str:
    """Clear the dead process's stale control socket (nobody serves it) and say how it ended."""
    remove_inside(state.directory, str(state.control_socket_path(name)))
    label = process_label(name)
    if entry is None or entry.pid is None:
        return f"started the {label} (none was recorded)"
    ended = observe_exit(state, name, entry)
    return (f"restarted the {label} (pid {entry.pid} was gone: {ended.cause}; "
            f"first seen gone {iso_time(ended.seen_gone_at)})")


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


STOPPED, GONE, ELSEWHERE = "stopped", "gone", "elsewhere"


def stop_journaled_process(pid: int | None, start_ticks: int | None, namespaces: set[str]) -> str:
    """Stop the journaled process if it is still the very one (same start time) and runs inside one of
    `namespaces` (the lab's own). Returns STOPPED, GONE (no such process: a reused pid is spared) or
    ELSEWHERE (it runs, but outside the lab's namespaces: left alone)."""
    pidfd = open_journaled(pid, start_ticks)
    if pidfd is None:
        return GONE
    try:
        if pid not in {p for group in namespace_pids(namespaces).values() for p in group}:
            return ELSEWHERE
        stop_pidfd(pidfd, STOP_GRACE_SECONDS)
        return STOPPED
    finally:
        os.close(pidfd)


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

"""Which process a journaled pid is: identity by pid *and* start time, never by name.

A pid alone names a process only while it lives: once it is reaped the number can be handed to
any new process. The journal therefore keeps field 22 of /proc/<pid>/stat (the start time in
clock ticks since boot) beside every pid; a process is "the one journaled" only when both match.
Signals go through a pidfd opened *before* the start time is checked, so a process that dies and
whose pid is reused between the check and the signal is never hit.

Who reaps a stack node: `lab up` forks it, so while that `lab up` runs it is the parent; once it
exits the node is re-parented to init (pid 1, or the nearest child subreaper), which reaps it when
it dies, at once under systemd, within a second or two under some container inits. A dead node
is therefore, depending on timing, a zombie with its exit status in /proc/<pid>/stat (field 52)
or no process at all; both count as dead here.
"""

from __future__ import annotations

import os
import select
import signal
from contextlib import suppress
from pathlib import Path

STAT_STATE = 0  # indexes into the fields after the command name: field 3 of /proc/<pid>/stat ...
STAT_START_TICKS = 19  # ... field 22
STAT_EXIT_CODE = 49  # ... field 52: the wait status of a zombie (Linux 3.5 and later)


def stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3 on), or of one of its threads
    (/proc/<pid>/task/<tid>/stat); None when there is no such process or thread."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        stat = Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: with the pid, it names one process for its whole life."""
    fields = stat_fields(pid)
    return int(fields[STAT_START_TICKS]) if fields is not None else None


def is_running(pid: int, start_ticks: int | None) -> bool:
    """The very process journaled (same pid, same start time; None: any) exists and is not a zombie.

    A zombie no longer pins a namespace. Never reaps: a child's exit status is its parent's to read.
    """
    fields = stat_fields(pid)
    return (fields is not None and fields[STAT_STATE] != "Z"
            and (start_ticks is None or int(fields[STAT_START_TICKS]) == start_ticks))


def zombie_wait_status(pid: int, start_ticks: int | None) -> int | None:
    """The wait status of the journaled process if it is a zombie not yet reaped, else None."""
    fields = stat_fields(pid)
    if fields is None or fields[STAT_STATE] != "Z" or len(fields) <= STAT_EXIT_CODE:
        return None
    if start_ticks is not None and int(fields[STAT_START_TICKS]) != start_ticks:
        return None
    return int(fields[STAT_EXIT_CODE])


def reap(pid: int) -> int | None:
    """Collect the exit status of a child of this process, so it does not linger as a zombie.

    Returns the wait status when this call reaped it; None when it still runs or is not our child
    (started by an earlier `lab up`: init reaps it).
    """
    with suppress(ChildProcessError):
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return status
    return None


def describe_wait_status(status: int) -> str:
    """A wait status in words: "killed by SIGKILL", "exited with status 2"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}" + (" (core dumped)" if os.WCOREDUMP(status) else "")
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


def boot_time() -> float | None:
    """The wall-clock time the machine booted (btime in /proc/stat), to date start ticks."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def started_at(start_ticks: int | None) -> float | None:
    """The wall-clock time a process with these start ticks started (to about a second)."""
    booted = boot_time()
    if start_ticks is None or booted is None:
        return None
    return booted + start_ticks / os.sysconf("SC_CLK_TCK")


def open_journaled(pid: int | None, start_ticks: int | None) -> int | None:
    """A pidfd on the journaled process if it still lives as that very process; None otherwise.

    The pidfd is opened first and the start time checked after: if the pid had been reused by the
    time of the check, the times differ and the pidfd (on the newcomer) is dropped.
    """
    if pid is None or start_ticks is None:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    if not is_running(pid, start_ticks):
        os.close(pidfd)
        return None
    return pidfd


def stop_pidfd(pidfd: int, grace: float) -> None:
    """SIGTERM through the pidfd, wait up to `grace` seconds for the exit, then SIGKILL."""
    with suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)  # readable once the process has exited
    if not poller.poll(int(grace * 1000)):
        with suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent doing anything but idling or waiting for I/O since
    boot, interrupts and softirqs included (the first line of /proc/stat): what no process is charged
    with, such as a packet's trip through the kernel's network stack, counts here too."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4] if len(fields) > 4 else 0
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(fields: list[str] | None) -> float | None:
    """User plus system CPU time (fields 14 and 15 of a stat file)."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields is not None else None


def thread_cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    """CPU time one thread of the process has used so far, its main thread unless `tid` is given."""
    return _cpu_seconds(stat_fields(pid, pid if tid is None else tid))


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time the process, every thread of it, has used so far."""
    return _cpu_seconds(stat_fields(pid))


def process_peak_rss_bytes(pid: int) -> int | None:
    """The most memory the process has held resident so far (VmHWM in /proc/<pid>/status)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

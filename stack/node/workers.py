"""A pystack node as N worker processes, each with its own Host on its own queue of one multi-queue TAP.

The node process (started by `lab up`) opens the TAP N times (IFF_MULTI_QUEUE: each descriptor is one
queue), creates one handover socket per worker, and forks the workers. Each worker runs the whole node
(`stack.node.daemon.serve`) in its own asyncio loop: its own Host with the node's address, MAC and secret,
its share of the ephemeral ports (`stack.tcp.ownership.FlowShare`) and the topology's apps on every port.

The kernel's tun driver chooses the queue of every frame it sends (`tun_automq_select_queue`): a flow
goes to the queue the stack last wrote its packets on, otherwise to hash % queues. So a passive connection
stays with the worker that got its SYN, and an active one with its opener while it keeps sending. What
lands elsewhere passes the `WorkerGate`: a segment of a flow another worker owns is handed to that worker
over its handover socket (never answered with a RST); ARP and ICMP other than echo requests are copied
to every worker, so each one resolves its neighbours and sees the errors of its own flows.

Worker 0 serves the node's control socket and the socket service; the others serve private control
sockets, which worker 0 asks (`WorkerPeers`) for what it merges (`ss`, `stats`, `tables`, `hello`) and
passes on what every worker must do (`listen`, `close`, `config`, `impair`). The node process only
watches: SIGTERM stops every worker, and a worker that dies stops the others and ends the node with an
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.node.runtime import CommandError
from stack.tcp.ownership import FlowShare

if TYPE_CHECKING:
    from stack.devices.tap import TapDevice
    from stack.host import Host
    from stack.node.settings import NodeSettings
    from stack.wire.buffer import BytesLike

HANDOVER_BUFFER = 8 * 1024 * 1024  # socket buffers of the handover sockets: a burst of 64 KB frames fits
MAX_HANDOVER_FRAME = 65535 + 64  # a super-segment of the TAP with room for its Ethernet header
HANDOVER_BATCH = 64  # frames taken from the handover socket per wake-up
VERIFIED = 0x01  # the handover's flag byte: the device vouched for the frame's TCP checksum
STOP_GRACE = 1.0  # seconds the workers get to stop after SIGTERM before they are killed
PEERS_START_SECONDS = 10.0  # worker 0 waits this long at most for the others to serve (lab up waits 20 s)
ETH_ARP = b"\x08\x06"
ETH_IPV4 = b"\x08\x00"
IPPROTO_ICMP = 1
ICMP_ECHO_REQUEST = 8
PR_SET_PDEATHSIG = 1


class WorkerDied(RuntimeError):
    """A worker process ended while the node was running (the node ends too, with this error)."""


def private_control_socket(public: Path, index: int) -> Path:
    """Worker `index`'s own control socket, next to the node's (worker 0 serves the node's)."""
    return public.with_name(f"{public.stem}.worker{index}.sock")


def make_handover_sockets(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """One datagram socket pair per worker: (its receiving end, the end the others send on)."""
    pairs = []
    for _ in range(count):
        receiving, sending = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for end in (receiving, sending):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, HANDOVER_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HANDOVER_BUFFER)
            end.setblocking(False)
        pairs.append((receiving, sending))
    return pairs


def shared_with_every_worker(frame: BytesLike) -> bool:
    """ARP, and ICMP other than an echo request: rare frames every worker needs (neighbours, errors of
    its own flows, replies to its pings), whichever queue the kernel put them on."""
    kind = bytes(frame[12:14])
    if kind == ETH_ARP:
        return True
    if kind != ETH_IPV4 or len(frame) < 34 or frame[23] != IPPROTO_ICMP:
        return False
    header = (frame[14] & 0x0F) * 4
    return len(frame) > 14 + header and frame[14 + header] != ICMP_ECHO_REQUEST


@dataclass
class WorkerGate:
    """Between worker `share.index`'s TAP queue and its Host: what is another worker's goes there.

    The TAP medium hands frames to the gate as it would to the Host; the gate gives them to the Host and,
    when the Host's TCP says the segment is another worker's flow (`TcpLayer.take_handover`), sends the
    frame to that worker. Frames arriving from other workers go to the Host only (never handed on again:
    a frame a worker was given is its own, and it answers it as a lone host would)."""

    host: Host
    share: FlowShare
    inbox: socket.socket
    outboxes: Sequence[socket.socket]  # outboxes[j] reaches worker j
    handed_over: int = 0
    copied: int = 0
    received: int = 0
    dropped: int = 0
    _buffer: bytearray = field(default_factory=lambda: bytearray(MAX_HANDOVER_FRAME + 1))

    def receive_frame(self, frame: BytesLike, now: float, checksum_verified: bool = False) -> None:
        if shared_with_every_worker(frame):
            for index in range(self.share.count):
                if index != self.share.index:
                    self._send(index, frame, checksum_verified)
                    self.copied += 1
        self.host.receive_frame(frame, now, checksum_verified)
        owner = self.host.tcp.take_handover()
        if owner is not None:
            self._send(owner, frame, checksum_verified)
            self.handed_over += 1

    def poll(self, now: float) -> list[Any]:
        return self.host.poll(now)

    def next_deadline(self) -> float | None:
        return self.host.next_deadline()

    def _send(self, index: int, frame: BytesLike, checksum_verified: bool) -> None:
        try:
            self.outboxes[index].sendmsg([bytes([VERIFIED if checksum_verified else 0]), frame])
        except OSError:  # the other worker is behind (or gone): a lost frame, which TCP recovers
            self.dropped += 1

    def take_handed_frames(self, now: float) -> int:
        """Give the Host the frames other workers handed over (at most a batch); how many there were."""
        view = memoryview(self._buffer)
        count = 0
        for _ in range(HANDOVER_BATCH):
            try:
                size = self.inbox.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                break
            if size < 15:
                continue
            self.host.receive_frame(bytes(view[1:size]), now, bool(self._buffer[0] & VERIFIED))
            self.host.tcp.take_handover()  # handed on once at most: a second owner would be a loop
            count += 1
        self.received += count
        return count

    def counters(self) -> dict[str, int]:
        return {"WorkerFramesHandedOver": self.handed_over, "WorkerFramesCopied": self.copied,
                "WorkerFramesReceived": self.received, "WorkerHandoverDrops": self.dropped}


@dataclass
class Worker:
    """What one worker process is given by the node process: its place, its queue, its handover sockets."""

    index: int
    count: int
    tap: TapDevice
    secret: bytes
    inbox: socket.socket
    outboxes: Sequence[socket.socket]
    node_pid: int
    peer_sockets: tuple[Path, ...] = ()  # worker 0: the other workers' private control sockets
    peer_pids: tuple[int, ...] = ()

    def flow_share(self, low: int, high: int) -> FlowShare:
        return FlowShare(self.index, self.count, low, high)


class WorkerPeers:
    """Worker 0's line to the other workers' control sockets: the same request, the answers merged."""

    FANOUT = frozenset({"listen", "close", "config", "impair"})
    MERGED = frozenset({"ss", "stats", "tables", "hello"})

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def refuse_unshareable(self, name: str, fields: dict[str, Any]) -> None:
        """CommandError for what cannot work across workers: an iperf3 listener (its data streams carry
        the session's cookie to whichever worker the kernel picks)."""
        if name == "listen" and fields.get("app") == "iperf3":
            raise CommandError(f"app iperf3 needs a node with 1 worker (this one has "
                               f"{self.worker.count}: an iperf3 session is one worker's)")

    async def merge(self, name: str, fields: dict[str, Any], line: bytes,
                    own: dict[str, Any]) -> dict[str, Any]:
        """`own` (worker 0's answer), completed with the other workers' answers to the same `line`."""
        if name not in self.FANOUT and name not in self.MERGED:
            return own
        answers = await asyncio.gather(*(self._ask(path, line) for path in self.worker.peer_sockets))
        for index, answer in enumerate(answers, start=1):
            if not answer.get("ok"):
                raise CommandError(f"worker {index}: {answer.get('error')}", answer.get("errno"))
        results = [own, *({k: v for k, v in a.items() if k != "ok"} for a in answers)]
        if name == "ss":
            return merge_ss(results, fields.get("limit"))
        if name == "stats":
            return merge_stats(results)
        if name == "tables":
            return {key: [row for result in results for row in result[key]] for key in own}
        if name == "hello":
            return {**own, "workers": self.worker.count, "node_pid": self.worker.node_pid,
                    "pids": [own["pid"], *self.worker.peer_pids]}
        return own

    async def wait_until_serving(self, timeout: float = PEERS_START_SECONDS) -> None:
        """Return once every other worker answers `hello` on its control socket, or after `timeout`.

        Worker 0 opens the node's control socket only then: `lab up` is done when that socket answers,
        and what follows (`hello`, `ss`, `listen`) reaches every worker, which a worker still starting
        would not answer. After `timeout` the node serves anyway, and a worker that never came up is
        reported by the request that needs it (and by the node process, which watches them all)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for path in self.worker.peer_sockets:
            while not (await self._ask(path, b'{"cmd":"hello"}')).get("ok"):
                if loop.time() >= deadline:
                    return
                await asyncio.sleep(0.01)

    @staticmethod
    async def _ask(path: Path, line: bytes) -> dict[str, Any]:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 26)
        except OSError as exc:
            return {"ok": False, "error": f"control socket {path}: {exc.strerror or exc}", "errno": None}
        try:
            writer.write(line.rstrip(b"\n") + b"\n")
            await writer.drain()
            answer: dict[str, Any] = json.loads(await reader.readline() or b"{}")
            return answer
        finally:
            writer.close()


def merge_ss(results: list[dict[str, Any]], limit: int | None) -> dict[str, Any]:
    """Every worker's `ss` answer as one: the connections of all, at most `limit`, the counts summed."""
    connections = [row for result in results for row in result["connections"]]
    if limit is not None:
        connections = connections[:limit]
    return {"connections": connections, "matched": sum(r["matched"] for r in results),
            "total": sum(r["total"] for r in results)}


def merge_stats(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The node's counters (each worker's summed) and, under `workers`, each worker's own."""
    total: dict[str, int] = {}
    for result in results:
        for key, value in result["counters"].items():
            total[key] = total.get(key, 0) + value
    return {"counters": total, "workers": [{"worker": index, "counters": result["counters"]}
                                           for index, result in enumerate(results)]}


# -- the node process ---------------------------------------------------------------------------------


def run_node(settings: NodeSettings, open_queue: Callable[[], TapDevice],
             run_worker: Callable[[NodeSettings, Worker], None]) -> None:
    """Open the TAP's queues, fork `settings.workers` workers and watch them until SIGTERM/SIGINT.

    `open_queue()` opens one more queue of the node's TAP (TapError propagates before any worker runs);
    `run_worker(settings, worker)` is a worker's main, in the forked process.
    WorkerDied when a worker ends on its own: the others are stopped first."""
    count = settings.workers
    taps: list[TapDevice] = []
    try:
        for _ in range(count):
            taps.append(open_queue())
    except BaseException:
        for tap in taps:
            tap.close()
        raise
    secret = os.urandom(32)
    sockets = make_handover_sockets(count)
    node_pid = os.getpid()
    peer_paths = tuple(private_control_socket(settings.control_socket, i) for i in range(1, count))
    stopping = False
    pids: list[int] = []

    def stop_workers(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {signum: signal.signal(signum, stop_workers) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in reversed(range(count)):  # worker 0 last: it knows every other worker's pid
            worker = Worker(index, count, taps[index], secret, sockets[index][0],
                            [pair[1] for pair in sockets], node_pid,
                            peer_paths if index == 0 else (), tuple(reversed(pids)) if index == 0 else ())
            pid = os.fork()
            if pid == 0:
                os._exit(_worker_main(settings, worker, taps, previous, run_worker))
            pids.append(pid)
    finally:
        for tap in taps:
            tap.close()  # the workers hold their queues; the node process holds none
    died = _watch(pids, lambda: stopping)
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    if died is not None:
        raise WorkerDied(f"worker {count - 1 - pids.index(died[0])} (pid {died[0]}) ended with status "
                         f"{died[1]}; the node's other workers were stopped")


def _watch(pids: list[int], stopping: Any) -> tuple[int, int] | None:
    """Wait for the workers; the first one to end on its own (pid, status) stops the others."""
    alive = set(pids)
    died: tuple[int, int] | None = None
    deadline: float | None = None
    if stopping():  # SIGTERM came while forking: the workers forked after it never heard it
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
    while alive:
        if deadline is not None and time.monotonic() > deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = None
        try:
            pid, status = os.waitpid(-1, os.WNOHANG if deadline is not None else 0)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.02)
            continue
        alive.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if died is None and not stopping():
            died = (pid, code)
        if deadline is None and (died is not None or stopping()):
            for other in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(other, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
    return died


def _worker_main(settings: NodeSettings, worker: Worker, taps: list[TapDevice], previous: dict,
                 run_worker: Callable[[NodeSettings, Worker], None]) -> int:
    """A forked worker: its queue only, killed with the node process, then the node's loop."""
    try:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != worker.node_pid:
            return 1  # the node process died while forking
        for tap in taps:
            if tap is not worker.tap:
                tap.close()
        run_worker(settings, worker)
        return 0
    except BaseException as exc:  # a worker reports and exits; the node process sees its status
        print(f"stack.node: {settings.node}: worker {worker.index}: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        return 1

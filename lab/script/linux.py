"""The Linux side: the script's calls on real kernel sockets, its segments through a TUN device.

Each run gets a throw-away namespace (a name unique to the run, removed always) whose only interface
besides loopback is a TUN device the runner opened: 192.168.0.1/24 on it, and 192.0.2.0/24 routed through
it, so every segment the kernel sends to the remote end 192.0.2.1 comes to the runner, and every packet the
runner writes arrives as if from the wire (packetdrill's local mode). The device is opened without
TUNSETOFFLOAD, so it offers the kernel no checksum or segmentation offload: what the runner reads is what
a NIC would have put on the wire. IPv6 is off in the namespace so nothing else talks on the device, and
its TCP buffers are a stock kernel's (see NAMESPACE_SYSCTLS).

Calls run on a thread of their own, one at a time: a call that blocks (accept before the handshake, a
blocking connect) stays blocked there while the script goes on, as in packetdrill; at the end a
shutdown() of every socket wakes it (in SYN_SENT too: the kernel disconnects the socket). Shell lines
run inside the namespace with the script's folder as their working directory.
"""

from __future__ import annotations

import fcntl
import os
import queue
import select
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from lab.build.state import TAG_PREFIX
from lab.kernel.namespaces import run_inside
from lab.kernel.netlink import Netlink
from lab.kernel.sockets import namespace_socket
from lab.script.calls import Mismatch, Skipped
from lab.script.model import LOCAL_IP, PREFIX_LENGTH, REMOTE_IP
from lab.script.packets import Observed, parse_outbound
from lab.script.player import Outcome

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
DEVICE = "tun0"
CALL_GRACE = 0.02  # a call not done by then is blocked: the script goes on without it
CALL_JOIN = 2.0
SHELL_TIMEOUT = 60.0
_REMOTE = socket.inet_aton(REMOTE_IP)
# IPv6 off, so nothing but the script's TCP talks on the device; Linux's default receive buffers (a new
# namespace copies the host's, and a host tuned for bulk transfer offers wscale 10 where scripts, written
# for a stock kernel, expect 7).
NAMESPACE_SYSCTLS = [("net.ipv6.conf.all.disable_ipv6", "1"),
                     ("net.ipv6.conf.default.disable_ipv6", "1"),
                     ("net.ipv4.tcp_rmem", "4096 131072 6291456"),
                     ("net.ipv4.tcp_wmem", "4096 16384 4194304")]


class LinuxSide:
    name = "linux"

    def __init__(self, prefix: str = "sr") -> None:
        self.lab = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.namespace = f"{self.lab}-pkt"
        self.ops = LinuxOps(self)
        self.sockets: list[socket.socket] = []
        self.packets: queue.Queue[Observed] = queue.Queue()
        self.start = time.monotonic()
        self.tun = -1
        self._stop_read, self._stop_write = os.pipe()
        self._reader: threading.Thread | None = None
        self._calls: list[threading.Thread] = []
        self._netlink: Netlink | None = None

    # -- the namespace --------------------------------------------------------------------------------

    def __enter__(self) -> LinuxSide:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        nl = self._netlink = Netlink()
        nl.create_namespace(self.namespace, TAG_PREFIX + self.lab)
        nl.write_sysctls(self.namespace, NAMESPACE_SYSCTLS)
        with nl.inside(self.namespace):
            self.tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fcntl.ioctl(self.tun, TUNSETIFF, struct.pack("16sH", DEVICE.encode(), IFF_TUN | IFF_NO_PI))
        ipr = nl.ipr(self.namespace)
        index = ipr.link_lookup(ifname=DEVICE)[0]
        ipr.link("set", index=index, mtu=1500, state="up")
        ipr.addr("add", index=index, address=LOCAL_IP, prefixlen=PREFIX_LENGTH)
        ipr.route("add", dst="192.0.2.0/24", oif=index)
        self._reader = threading.Thread(target=self._read, name="script-tun", daemon=True)
        self._reader.start()

    def close(self) -> None:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a call still blocked on it
            except OSError:
                pass
        os.write(self._stop_write, b"x")
        if self._reader is not None:
            self._reader.join(timeout=5)
        for thread in self._calls:
            thread.join(timeout=CALL_JOIN)  # the shutdowns above woke it; a daemon never holds up an exit
        for sock in self.sockets:
            sock.close()
        if self.tun >= 0:
            os.close(self.tun)
            self.tun = -1
        for fd in (self._stop_read, self._stop_write):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._netlink is not None:
            try:
                self._netlink.remove_namespace(self.namespace)
            finally:
                self._netlink.close()
                self._netlink = None

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.tun, self._stop_read], [], [])
            if self._stop_read in ready:
                return
            try:
                data = os.read(self.tun, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            seen = parse_outbound(data, self.now())
            if seen is not None and data[16:20] == _REMOTE:
                self.packets.put(seen)

    # -- time and the wire ----------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.start

    def advance(self, until: float) -> None:
        delay = until - self.now()
        if delay > 0:
            time.sleep(delay)

    def queued(self) -> list[Observed]:
        with self.packets.mutex:
            return list(self.packets.queue)

    def take_outbound(self, deadline: float) -> Observed | None:
        try:
            return self.packets.get(timeout=max(0.0, deadline - self.now()))
        except queue.Empty:
            return None

    def inject(self, packet: bytes) -> None:
        os.write(self.tun, packet)

    # -- calls -----------------------------------------------------------------------------------------

    def start_call(self, operation: Callable[[], int]) -> Outcome | Future[Outcome]:
        def run() -> Outcome:
            try:
                value = operation()
            except (OSError, Skipped, Mismatch) as error:
                return Outcome(None, error, self.now())
            return Outcome(value, None, self.now())

        future: Future[Outcome] = Future()
        thread = threading.Thread(target=lambda: future.set_result(run()), name="script-call", daemon=True)
        self._calls.append(thread)
        thread.start()
        try:
            return future.result(timeout=CALL_GRACE)
        except FutureTimeout:
            return future

    def finish_call(self, pending: object, until: float) -> Outcome | None:
        assert isinstance(pending, Future)
        try:
            return pending.result(timeout=max(0.0, until - self.now()))
        except FutureTimeout:
            return None

    def shell(self, command: str, cwd: str) -> tuple[int, str] | None:
        try:
            done = run_inside(self.namespace, ["sh", "-c", command], cwd=cwd, capture_output=True, text=True,
                              timeout=SHELL_TIMEOUT)
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {SHELL_TIMEOUT:g} s"
        return done.returncode, (done.stderr or done.stdout)


def _sock(handle: object) -> socket.socket:
    assert isinstance(handle, socket.socket)
    return handle


class LinuxOps:
    """The script's calls on kernel sockets made inside the side's namespace."""

    def __init__(self, side: LinuxSide) -> None:
        self.side = side

    def socket(self) -> object:
        sock = namespace_socket(self.side.namespace)
        self.side.sockets.append(sock)
        return sock

    def bind(self, handle: object, address: tuple[str, int]) -> None:
        _sock(handle).bind(address)

    def listen(self, handle: object, backlog: int) -> None:
        _sock(handle).listen(backlog)

    def accept(self, handle: object) -> object:
        connection, _address = _sock(handle).accept()
        connection.setblocking(True)
        self.side.sockets.append(connection)
        return connection

    def connect(self, handle: object, address: tuple[str, int]) -> None:
        _sock(handle).connect(address)

    def send(self, handle: object, size: int) -> int:
        return _sock(handle).send(bytes(size))

    def recv(self, handle: object, size: int) -> int:
        return len(_sock(handle).recv(size))

    def shutdown(self, handle: object, how: int) -> None:
        _sock(handle).shutdown(how)

    def close(self, handle: object) -> None:
        sock = _sock(handle)
        sock.close()

    def setsockopt(self, handle: object, level: int, option: int,
                   value: int | tuple[int, int] | bytes) -> None:
        if isinstance(value, tuple):
            _sock(handle).setsockopt(level, option, struct.pack("ii", *value))
        else:
            _sock(handle).setsockopt(level, option, value)

    def getsockopt(self, handle: object, level: int, option: int) -> int:
        return _sock(handle).getsockopt(level, option)

    def set_nonblocking(self, handle: object, on: bool) -> None:
        _sock(handle).setblocking(not on)

    def nonblocking(self, handle: object) -> bool:
        return not _sock(handle).getblocking()

    def poll(self, handle: object, events: int, timeout: float) -> int:
        poller = select.poll()
        poller.register(_sock(handle), events)
        ready = poller.poll(None if timeout < 0 else timeout * 1000)
        return ready[0][1] if ready else 0

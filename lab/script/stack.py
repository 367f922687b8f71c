"""The stack side: the script drives a Python stack `Host` in this process, on a virtual clock.

The Host is 192.168.0.1/24 with 192.0.2.0/24 on its link; the runner plays the remote end (it answers
the Host's ARP for 192.0.2.1 and hands it the script's inbound packets in Ethernet frames). Time passes
only when the script says so: the clock jumps from one Host deadline to the next, so a script with a 3 s
retransmission timeout takes milliseconds and plays the same way every time. System calls go to the
Host's non-blocking TCP sockets (`stack.tcp.TcpSocket`); a call on a blocking socket that would block is
retried as time passes, which is what a blocking call does. Shell lines have no meaning here: skipped,
with a note.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from lab.script.calls import Blocked, Mismatch, Skipped
from lab.script.model import LOCAL_IP, PREFIX_LENGTH, REMOTE_IP
from lab.script.packets import Observed, parse_outbound
from lab.script.player import Outcome
from stack.host import Host
from stack.tcp.tcp_socket import TcpSocket
from stack.wire.arp import arp_reply_for, build_arp, parse_arp
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import EthernetFrame, build_ethernet, mac_from_str, parse_ethernet

REMOTE_MAC = mac_from_str("02:00:00:00:00:99")
LOCAL_MAC = "02:00:00:00:00:01"
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
SEED = 1
MAX_STEPS = 1_000_000  # bounds a walk through deadlines (a Host that always has work would spin)


@dataclass(slots=True)
class _Sock:
    tcp: TcpSocket
    nonblocking: bool = False
    connecting: bool = False
    sent: int = 0  # what a blocking write() has queued so far


class StackSide:
    name = "stack"

    def __init__(self) -> None:
        self.host = Host(f"{LOCAL_IP}/{PREFIX_LENGTH}", LOCAL_MAC, routes=(("192.0.2.0/24", None),),
                         seed=SEED, secret=bytes(32), gratuitous_arp=False)
        self.clock = 0.0
        self.outbound: list[Observed] = []
        self.ops = StackOps(self)

    def __enter__(self) -> StackSide:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def now(self) -> float:
        return self.clock

    def pump(self) -> None:
        """Take every frame the Host has to send now; answer its ARP, keep its TCP segments."""
        for _ in range(MAX_STEPS):
            frames = self.host.poll(self.clock)
            if not frames:
                return
            for frame in frames:
                self.frame_out(frame.joined())
        raise RuntimeError("the stack keeps sending frames at one instant")

    def frame_out(self, data: bytes) -> None:
        try:
            frame = parse_ethernet(data)
        except MalformedPacket:
            return
        if frame.ethertype == ETHERTYPE_ARP:
            try:
                request = parse_arp(frame.payload)
            except MalformedPacket:
                return
            if request.target_ip == socket.inet_aton(REMOTE_IP) and request.op == 1:
                reply = arp_reply_for(request, REMOTE_MAC)
                self.host.receive_frame(build_ethernet(EthernetFrame(frame.src, REMOTE_MAC, ETHERTYPE_ARP,
                                                                     build_arp(reply))), self.clock)
        elif frame.ethertype == ETHERTYPE_IPV4:
            seen = parse_outbound(bytes(frame.payload), self.clock)
            if seen is not None:
                self.outbound.append(seen)

    def step(self, until: float) -> bool:
        """Move the clock to the Host's next deadline if it comes by `until`; False when none does."""
        self.pump()
        deadline = self.host.next_deadline()
        if deadline is None or deadline > until:
            return False
        self.clock = max(self.clock, deadline)
        self.pump()
        return True

    def advance(self, until: float) -> None:
        for _ in range(MAX_STEPS):
            if not self.step(until):
                break
        self.clock = max(self.clock, until)
        self.pump()

    def queued(self) -> list[Observed]:
        self.pump()
        return list(self.outbound)

    def take_outbound(self, deadline: float) -> Observed | None:
        for _ in range(MAX_STEPS):
            self.pump()
            if self.outbound:
                return self.outbound.pop(0)
            if not self.step(deadline):
                self.clock = max(self.clock, deadline)
                self.pump()
                return self.outbound.pop(0) if self.outbound else None
        return None

    def inject(self, packet: bytes) -> None:
        frame = EthernetFrame(self.host.mac, REMOTE_MAC, ETHERTYPE_IPV4, packet)
        self.host.receive_frame(build_ethernet(frame), self.clock)
        self.pump()

    def start_call(self, operation: Callable[[], int]) -> Outcome | _Waiting:
        waiting = _Waiting(operation)
        outcome = self.attempt(waiting)
        return waiting if outcome is None else outcome

    def attempt(self, waiting: _Waiting) -> Outcome | None:
        try:
            value = waiting.operation()
        except Blocked as blocked:
            if blocked.give_up_at is not None:
                waiting.give_up_at = blocked.give_up_at
                waiting.fallback = blocked.fallback
            if waiting.give_up_at is not None and self.clock >= waiting.give_up_at:
                return Outcome(waiting.fallback, None, self.clock)
            return None
        except (OSError, Skipped, Mismatch) as error:
            self.pump()
            return Outcome(None, error, self.clock)
        self.pump()
        return Outcome(value, None, self.clock)

    def finish_call(self, pending: object, until: float) -> Outcome | None:
        assert isinstance(pending, _Waiting)
        for _ in range(MAX_STEPS):
            outcome = self.attempt(pending)
            if outcome is not None:
                return outcome
            limit = until if pending.give_up_at is None else min(until, pending.give_up_at)
            if not self.step(limit):
                if self.clock >= until:
                    return None
                self.clock = limit
        return None

    def shell(self, command: str, cwd: str) -> tuple[int, str] | None:
        return None


@dataclass(slots=True)
class _Waiting:
    operation: Callable[[], int]
    give_up_at: float | None = None
    fallback: int = 0


def _option_name(level: int, option: int) -> str:
    prefixes = ("SO_",) if level == socket.SOL_SOCKET else ("TCP_",)
    for name in dir(socket):
        if name.startswith(prefixes) and getattr(socket, name) == option:
            return name
    return f"({level}, {option})"


class StackOps:
    """The script's calls on the Host's TCP sockets; blocking is the side's retrying."""

    def __init__(self, side: StackSide) -> None:
        self.side = side

    def _blocking(self, handle: _Sock, call: Callable[[], object]) -> object:
        try:
            return call()
        except BlockingIOError:
            if handle.nonblocking:
                raise
            raise Blocked(lambda: 0) from None

    def socket(self) -> object:
        return _Sock(self.side.host.tcp.socket())

    def bind(self, handle: object, address: tuple[str, int]) -> None:
        assert isinstance(handle, _Sock)
        handle.tcp.bind(address)

    def listen(self, handle: object, backlog: int) -> None:
        assert isinstance(handle, _Sock)
        handle.tcp.listen(backlog)

    def accept(self, handle: object) -> object:
        assert isinstance(handle, _Sock)
        connection, _address = self._blocking(handle, handle.tcp.accept)  # type: ignore[misc]
        return _Sock(connection)

    def connect(self, handle: object, address: tuple[str, int]) -> None:
        assert isinstance(handle, _Sock)
        tcp = handle.tcp
        if handle.connecting:
            error = tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                handle.connecting = False
                raise OSError(int(error), errno.errorcode.get(int(error), ""))  # type: ignore[call-overload]
            if tcp.writable:
                handle.connecting = False
                return
            raise Blocked(lambda: 0)
        try:
            tcp.connect(address, self.side.clock)
        except BlockingIOError as exc:
            if handle.nonblocking or exc.errno != errno.EINPROGRESS:
                raise
            handle.connecting = True
            raise Blocked(lambda: 0) from None

    def send(self, handle: object, size: int) -> int:
        """A non-blocking write takes what fits; a blocking one, like Linux's, returns when all is queued."""
        assert isinstance(handle, _Sock)
        if handle.nonblocking:
            return handle.tcp.send(bytes(size))
        try:
            handle.sent += handle.tcp.send(bytes(size - handle.sent))
        except BlockingIOError:
            raise Blocked(lambda: 0) from None
        except OSError:
            handle.sent = 0
            raise
        if handle.sent < size:
            raise Blocked(lambda: 0)
        handle.sent = 0
        return size

    def recv(self, handle: object, size: int) -> int:
        assert isinstance(handle, _Sock)
        return len(self._blocking(handle, lambda: handle.tcp.recv(size)))  # type: ignore[arg-type]

    def shutdown(self, handle: object, how: int) -> None:
        assert isinstance(handle, _Sock)
        handle.tcp.shutdown(how, self.side.clock)

    def close(self, handle: object) -> None:
        assert isinstance(handle, _Sock)
        handle.tcp.close(self.side.clock)

    def setsockopt(self, handle: object, level: int, option: int,
                   value: int | tuple[int, int] | bytes) -> None:
        assert isinstance(handle, _Sock)
        raw: object = struct.pack("ii", *value) if isinstance(value, tuple) else value
        try:
            handle.tcp.setsockopt(level, option, raw)
        except OSError as exc:
            if exc.errno == errno.ENOPROTOOPT:
                raise Skipped(f"the stack has no {_option_name(level, option)}") from None
            raise

    def getsockopt(self, handle: object, level: int, option: int) -> int:
        assert isinstance(handle, _Sock)
        try:
            value = handle.tcp.getsockopt(level, option)
        except OSError as exc:
            if exc.errno == errno.ENOPROTOOPT:
                raise Skipped(f"the stack has no {_option_name(level, option)}") from None
            raise
        if isinstance(value, bytes | bytearray):
            return int.from_bytes(bytes(value)[:4], "little")
        if isinstance(value, tuple):
            return int(value[0])
        return int(value)  # type: ignore[call-overload]

    def set_nonblocking(self, handle: object, on: bool) -> None:
        assert isinstance(handle, _Sock)
        handle.nonblocking = on

    def nonblocking(self, handle: object) -> bool:
        assert isinstance(handle, _Sock)
        return handle.nonblocking

    def poll(self, handle: object, events: int, timeout: float) -> int:
        assert isinstance(handle, _Sock)
        tcp = handle.tcp
        mask = 0
        if tcp.readable:
            mask |= select.POLLIN
        if tcp.writable:
            mask |= select.POLLOUT
        if tcp.error:
            mask |= select.POLLERR
        mask &= events | select.POLLERR | select.POLLHUP
        if mask or timeout == 0:
            return mask
        raise Blocked(lambda: 0, None if timeout < 0 else self.side.clock + timeout, 0)

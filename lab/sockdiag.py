"""The kernel's TCP sockets of one namespace, read through NETLINK_SOCK_DIAG (what `ss -tan` shows).

Experiments read the kernel side of a connection here: listeners with their accept queue (Recv-Q) and
backlog (Send-Q), connections in SYN_SENT with their SYN retransmissions, TIME_WAIT sockets with the
time they have left. A netlink socket answers for the namespace it was created in, so the reader
creates its socket inside the node's namespace and needs no subprocess.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from lab.kernel import KERNEL_TCP_STATES, inside_namespace

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
ALL_STATES = 0xFFFFFFFF
_NLMSG_HEADER = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48 bytes, all zero: no filter).
_DIAG_REQUEST = struct.Struct("=BBBxI48x")
# inet_diag_msg, after family/state/timer/retrans (4 bytes) and the socket id (48 bytes).
_DIAG_PORTS = struct.Struct("!HH")
_DIAG_TAIL = struct.Struct("=IIIII")  # expires (ms), rqueue, wqueue, uid, inode
_DIAG_MESSAGE_LEN = 72


@dataclass(frozen=True, slots=True)
class KernelSocket:
    """One row of `ss -tan` in a namespace. For a listener, recv_queue is the accept queue's length and
    send_queue the backlog; for a connection they are the bytes queued each way."""

    state: str
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    recv_queue: int
    send_queue: int
    retransmits: int  # icsk_retransmits: retransmissions of the segment now at the head (SYNs in SYN_SENT)
    timer_ms: int  # time left on the socket's timer (TIME_WAIT: until it goes away)


def kernel_tcp_sockets(namespace: str) -> list[KernelSocket]:
    """Every IPv4 TCP socket of `namespace`, listeners, request sockets and TIME_WAIT included."""
    with inside_namespace(namespace):  # a netlink socket answers for the namespace it was made in
        diag = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        diag.settimeout(5)
        request = _DIAG_REQUEST.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, ALL_STATES)
        header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY,
                                    NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        diag.sendall(header + request)
        return read_sock_diag_dump(diag)
    finally:
        diag.close()


def read_sock_diag_dump(diag: socket.socket) -> list[KernelSocket]:
    """The rows of one SOCK_DIAG_BY_FAMILY dump, read until NLMSG_DONE (an NLMSG_ERROR is an OSError)."""
    found: list[KernelSocket] = []
    while True:
        data = diag.recv(1 << 16)
        offset = 0
        while offset + _NLMSG_HEADER.size <= len(data):
            length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
            if length < _NLMSG_HEADER.size:
                raise OSError(errno.EPROTO, "sock_diag: malformed netlink message")
            if kind == NLMSG_DONE:
                return found
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)
                raise OSError(-code, f"sock_diag: {errno.errorcode.get(-code, code)}")
            if kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSG_HEADER.size + _DIAG_MESSAGE_LEN:
                found.append(_parse_diag_message(data, offset + _NLMSG_HEADER.size))
            offset += (length + 3) & ~3


def _parse_diag_message(data: bytes, at: int) -> KernelSocket:
    state, timer, retrans = data[at + 1], data[at + 2], data[at + 3]
    sport, dport = _DIAG_PORTS.unpack_from(data, at + 4)
    src = str(IPv4Address(data[at + 8:at + 12]))
    dst = str(IPv4Address(data[at + 24:at + 28]))
    expires, rqueue, wqueue, _, _ = _DIAG_TAIL.unpack_from(data, at + 52)
    return KernelSocket(KERNEL_TCP_STATES.get(state, str(state)), src, sport, dst, dport, rqueue, wqueue,
                        retrans, expires if timer else 0)


def kernel_listener(namespace: str, port: int) -> KernelSocket | None:
    """The listening socket on `port` in `namespace`, or None when nothing listens there."""
    for entry in kernel_tcp_sockets(namespace):
        if entry.state == "LISTEN" and entry.local_port == port:
            return entry
    return None

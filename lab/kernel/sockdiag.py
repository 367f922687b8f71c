"""The kernel's TCP sockets of one namespace, read through NETLINK_SOCK_DIAG (what `ss -tan` shows).

Experiments read the kernel side of a connection here: listeners with their accept queue (Recv-Q) and
backlog (Send-Q), connections in SYN_SENT with their SYN retransmissions, TIME_WAIT sockets with the
time they have left. pyroute2's `DiagSocket` sends the inet_diag dump request and decodes the answers
(`inet_diag_msg`). A netlink socket answers for the namespace it was created in, so the socket is
created inside the node's namespace, with no subprocess.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import DiagSocket
from pyroute2.netlink import NLMSG_ERROR, nlmsgerr
from pyroute2.netlink.diag import SOCK_DIAG_BY_FAMILY

from lab.kernel.namespaces import inside_namespace
from lab.kernel.sockets import KERNEL_TCP_STATES

ALL_STATES = 0xFFFFFFFF  # every state bit, request sockets (NEW_SYN_RECV) and TIME_WAIT included


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
        diag = DiagSocket()
    with diag:
        diag.bind()
        return sockets_of_dump(diag.get_sock_stats(family=socket.AF_INET, states=ALL_STATES,
                                                   protocol=socket.IPPROTO_TCP))


def sockets_of_dump(messages: Iterable[Any]) -> list[KernelSocket]:
    """The rows of one SOCK_DIAG_BY_FAMILY dump as pyroute2 decoded it (an NLMSG_ERROR is an OSError)."""
    found: list[KernelSocket] = []
    for message in messages:
        kind = message["header"]["type"]
        if kind == NLMSG_ERROR:  # DiagSocket leaves errors undecoded: its message key is the family
            error = nlmsgerr(message.data, offset=message.offset)
            error.decode()
            code = -error["error"]
            raise OSError(code, f"sock_diag: {errno.errorcode.get(code, code)}")
        if kind == SOCK_DIAG_BY_FAMILY:
            found.append(kernel_socket(message))
    return found


def kernel_socket(message: Any) -> KernelSocket:
    """One `inet_diag_msg` as a row."""
    state = message["idiag_state"]
    return KernelSocket(KERNEL_TCP_STATES.get(state, str(state)), message["idiag_src"],
                        message["idiag_sport"], message["idiag_dst"], message["idiag_dport"],
                        message["idiag_rqueue"],
                        message["idiag_wqueue"], message["idiag_retrans"],
                        message["idiag_expires"] if message["idiag_timer"] else 0)


def kernel_listener(namespace: str, port: int) -> KernelSocket | None:
    """The listening socket on `port` in `namespace`, or None when nothing listens there."""
    for entry in kernel_tcp_sockets(namespace):
        if entry.state == "LISTEN" and entry.local_port == port:
            return entry
    return None

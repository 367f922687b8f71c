"""Batched rtnetlink requests: the hot path of `lab up`.

A 100-node lab makes about a thousand requests (links, addresses, routes). Sent one at a time, each
would cost a round trip and a pass through pyroute2's request machinery (a sync wrapper over an
asyncio core), which is most of the time of `up`. So each namespace's requests are built as
pyroute2's declared messages (`ifinfmsg`, `ifaddrmsg`, `rtmsg`), encoded with `.encode()`, sent
together in one datagram per batch, and their acknowledgements (`nlmsgerr`) read back at once.
Rare and varied requests (TAPs, qdiscs, dumps) go through `IPRoute` (see `lab.kernel.netlink`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR, nlmsg, nlmsgerr
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from lab.kernel.errors import NetlinkOpError

NETLINK_ROUTE = 0
IFF_UP = 1
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
BATCH_MESSAGES = 256  # per datagram: keeps the acknowledgements well inside the receive buffer
SOCKET_BUFFER = 4 * 1024 * 1024
NLMSG_HEADER_LENGTH = 16

Attributes = list[tuple[str, object]]


def link_attributes(name: str | None, mtu: int | None, mac: str | None, ns_fd: int | None) -> Attributes:
    """IFLA_* attributes of a new interface: its name, MTU, MAC and the namespace it is born in."""
    attrs: Attributes = []
    if name is not None:
        attrs.append(("IFLA_IFNAME", name))
    if mtu is not None:
        attrs.append(("IFLA_MTU", mtu))
    if mac is not None:
        attrs.append(("IFLA_ADDRESS", mac))
    if ns_fd is not None:
        attrs.append(("IFLA_NET_NS_FD", ns_fd))
    return attrs


def new_link_message(index: int, attrs: Attributes, kind: str, data: Attributes) -> ifinfmsg:
    """RTM_NEWLINK of an interface of `kind` ("veth", "bridge") with the given IFLA_INFO_DATA."""
    message = ifinfmsg()
    message["index"] = index
    info = {"attrs": [("IFLA_INFO_KIND", kind), ("IFLA_INFO_DATA", {"attrs": data})]}
    message["attrs"] = [*attrs, ("IFLA_LINKINFO", info)]
    return message


@dataclass
class Request:
    message: nlmsg  # a declared pyroute2 message, header type and flags set by `RtnlBatch.commit`
    kind: int
    flags: int
    what: str  # names the object in an error message


class RtnlBatch:
    """Requests for one namespace, sent together; `commit()` raises on the first refused one."""

    def __init__(self, sock: socket.socket, namespace: str | None) -> None:
        self.sock = sock
        self.namespace = namespace
        self.requests: list[Request] = []

    def __len__(self) -> int:
        return len(self.requests)

    def new_veth(self, a: tuple[int, str, int | None], b: tuple[int, str, int | None], *, mtu: int,
                 mac_a: str | None, mac_b: str | None, what: str) -> None:
        """a, b: (ifindex to assign, name, namespace fd or None for here)."""
        peer = {"index": b[0], "attrs": link_attributes(b[1], mtu, mac_b, b[2])}
        message = new_link_message(a[0], link_attributes(a[1], mtu, mac_a, a[2]), "veth",
                                   [("VETH_INFO_PEER", peer)])
        self.requests.append(Request(message, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, what))

    def new_bridge(self, index: int, name: str, mtu: int | None, what: str) -> None:
        """STP off and forward delay 0: ports forward the moment they are up."""
        message = new_link_message(index, link_attributes(name, mtu, None, None), "bridge",
                                   [("IFLA_BR_STP_STATE", 0), ("IFLA_BR_FORWARD_DELAY", 0)])
        self.requests.append(Request(message, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, what))

    def set_link(self, index: int, *, alias: str | None, master: int | None, up: bool, what: str) -> None:
        message = ifinfmsg()
        message["index"] = index
        message["flags"] = IFF_UP if up else 0
        message["change"] = IFF_UP
        attrs: Attributes = []
        if alias is not None:
            attrs.append(("IFLA_IFALIAS", alias))
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        message["attrs"] = attrs
        self.requests.append(Request(message, RTM_NEWLINK, 0, what))

    def add_address(self, index: int, address: IPv4Interface, what: str) -> None:
        message = ifaddrmsg()
        message["family"] = socket.AF_INET
        message["prefixlen"] = address.network.prefixlen
        message["scope"] = RT_SCOPE_UNIVERSE
        message["index"] = index
        message["attrs"] = [("IFA_LOCAL", str(address.ip)), ("IFA_ADDRESS", str(address.ip))]
        self.requests.append(Request(message, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, what))

    def add_route(self, destination: IPv4Network, gateway: str, what: str) -> None:
        message = rtmsg()
        message["family"] = socket.AF_INET
        message["dst_len"] = destination.prefixlen
        message["table"] = RT_TABLE_MAIN
        message["proto"] = RTPROT_STATIC
        message["scope"] = RT_SCOPE_UNIVERSE
        message["type"] = RTN_UNICAST
        attrs: Attributes = [("RTA_DST", str(destination.network_address))] if destination.prefixlen else []
        message["attrs"] = [*attrs, ("RTA_GATEWAY", gateway)]
        self.requests.append(Request(message, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, what))

    def link_alias(self, index: int) -> str | None:
        """The ifalias of one interface (a single RTM_GETLINK, answered at once)."""
        request = ifinfmsg()
        request["index"] = index
        request["header"]["type"] = RTM_GETLINK
        request["header"]["flags"] = NLM_F_REQUEST
        request["header"]["sequence_number"] = 1
        request.encode()
        self.sock.send(request.data)
        data = self.sock.recv(SOCKET_BUFFER)
        reply = ifinfmsg(data)
        reply.decode()
        if reply["header"]["type"] == NLMSG_ERROR:
            error = nlmsgerr(data)
            error.decode()
            where = self.namespace or "root"
            raise NetlinkOpError(f"read interface {index} (in {where}): {os.strerror(-error['error'])}")
        return reply.get_attr("IFLA_IFALIAS")

    def commit(self) -> None:
        requests, self.requests = self.requests, []
        for start in range(0, len(requests), BATCH_MESSAGES):
            self.send_and_check(requests[start:start + BATCH_MESSAGES])

    def send_and_check(self, requests: list[Request]) -> None:
        """One datagram of requests, then every acknowledgement; the first refusal (by order) is raised."""
        datagram = bytearray()
        for seq, request in enumerate(requests, start=1):
            header = request.message["header"]
            header["type"] = request.kind
            header["flags"] = NLM_F_REQUEST | NLM_F_ACK | request.flags
            header["sequence_number"] = seq
            request.message.encode()
            datagram += request.message.data
        self.sock.send(datagram)
        pending = len(requests)
        first_error: tuple[int, int] | None = None
        while pending:
            data = self.sock.recv(SOCKET_BUFFER)
            offset = 0
            while offset + NLMSG_HEADER_LENGTH <= len(data):
                ack = nlmsgerr(data, offset=offset)
                ack.decode()
                header = ack["header"]
                if header["type"] == NLMSG_ERROR:
                    pending -= 1
                    code, seq = ack["error"], header["sequence_number"]
                    if code and (first_error is None or seq < first_error[0]):
                        first_error = (seq, -code)
                offset += max((header["length"] + 3) & ~3, NLMSG_HEADER_LENGTH)
        if first_error is not None:
            seq, code = first_error
            where = self.namespace or "root"
            raise NetlinkOpError(f"{requests[seq - 1].what} (in {where}): {os.strerror(code)}")


def raw_rtnl_socket() -> socket.socket:
    """A bare rtnetlink socket in the calling thread's current namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.bind((0, 0))
    return sock

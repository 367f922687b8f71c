"""A raw SYN sender: SYNs from an address nobody has, as a SYN flood sends them, for the two-queues lab.

A listener's SYN queue is seen non-empty only while handshakes stay incomplete. A client that never
sends the final ACK is one whose SYN carries a source address that answers nothing: the listener
puts the request in its SYN queue (SYN_RECV), sends its SYN-ACK into the void and retransmits it on
its timer until it gives up. Past the SYN queue's limit the listener answers with SYN cookies.

The frame is built with the stack's own codecs (`stack.wire`) and written with an AF_PACKET socket
made inside a namespace, on one interface, so it bypasses that namespace's own TCP (which would
reset the SYN-ACK). The caller makes the source address resolve to nothing (a static neighbour
entry on the listener's side, `lab.kernel.silent.silent_neighbour`), so the SYN-ACKs leave and vanish.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from ipaddress import IPv4Address

from pyroute2 import IPRoute

from lab.kernel.namespaces import inside_namespace
from stack.wire.ethernet import EthernetFrame, build_ethernet, mac_from_str
from stack.wire.ipv4 import Ipv4Packet, build_ipv4
from stack.wire.tcp import PROTO_TCP, TcpFlags, TcpOptions, TcpSegment, build_tcp

ETH_P_IP = 0x0800
# What a Linux client offers in its SYN (tcp_connect_init's choices on this kind of path).
SYN_OPTIONS = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0))
SYN_WINDOW = 64240


def interface_mac(namespace: str, ifname: str) -> str:
    """The MAC address of `ifname` in `namespace` ("02:..."), read over netlink."""
    with inside_namespace(namespace):
        ipr = IPRoute()
    with ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            raise OSError(f"no interface {ifname} in namespace {namespace}")
        return str(links[0].get_attr("IFLA_ADDRESS"))


def syn_frame(src_mac: str, dst_mac: str, src: tuple[str, int], dst: tuple[str, int], isn: int) -> bytes:
    """One Ethernet frame carrying a SYN from `src` to `dst` with a Linux client's options."""
    src_ip, dst_ip = IPv4Address(src[0]).packed, IPv4Address(dst[0]).packed
    segment = TcpSegment(src[1], dst[1], isn, 0, TcpFlags.SYN, SYN_WINDOW, SYN_OPTIONS)
    packet = build_ipv4(Ipv4Packet(src_ip, dst_ip, PROTO_TCP, build_tcp(segment, src_ip, dst_ip)))
    return build_ethernet(EthernetFrame(mac_from_str(dst_mac), mac_from_str(src_mac), ETH_P_IP, packet))


def send_syns(namespace: str, ifname: str, dst_mac: str, src_ip: str, dst: tuple[str, int],
              src_ports: Iterable[int], *, src_mac: str = "02:00:5e:00:53:02") -> int:
    """Send one SYN from (`src_ip`, port) to `dst` for each port, out of `ifname` of `namespace`; how many.

    `dst_mac` is the listener's interface MAC: the frame goes straight to it, no ARP asked."""
    with inside_namespace(namespace):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sent = 0
    with raw:
        raw.bind((ifname, 0))
        for port in src_ports:
            raw.send(syn_frame(src_mac, dst_mac, (src_ip, port), dst, isn=0x10000 * port))
            sent += 1
    return sent

"""The wire codecs against the real Linux kernel, run inside a private network namespace.

Run by test_wire_linux.py as ``unshare --net python linux_peer.py PCAP_PATH``: the namespace
(with the TAP and every socket in it) vanishes when this process exits, however it exits.

The kernel owns 10.77.0.1/24 on a TAP; this script plays the host 10.77.0.2 using only the
codecs in `stack.wire` (ARP replies, a hand-driven TCP handshake, data, SACK, ICMP, UDP
fragments). Each check prints one JSON line ``{"check": name, "ok": bool, "detail": ...}``;
the pytest side asserts on them. All traffic stays on the TAP inside this namespace.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import select
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable

from pyroute2 import IPRoute

from stack.devices.pcap import PcapWriter
from stack.net.reassembly import Reassembler
from stack.wire import (
    ARP_REQUEST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    UNREACH_FRAG_NEEDED,
    UNREACH_PORT,
    EthernetFrame,
    Ipv4Packet,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    arp_reply_for,
    build_arp,
    build_ethernet,
    build_icmp,
    build_ipv4,
    build_tcp,
    build_tcp_frame,
    destination_unreachable,
    echo_reply_for,
    echo_request,
    fragment_ipv4,
    internet_checksum,
    parse_arp,
    parse_ethernet,
    parse_icmp,
    parse_ipv4,
    parse_tcp,
    pseudo_header_sum,
)

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_NEEDS_CSUM = 1
TAP_NAME = "wiretap0"
KERNEL_IP = "10.77.0.1"
STACK_IP = "10.77.0.2"
OFFLOAD_TAP_NAME = "wiretap1"  # opened with IFF_VNET_HDR and checksum offload
OFFLOAD_KERNEL_IP = "10.78.0.1"
OFFLOAD_STACK_IP = "10.78.0.2"
STACK_MAC = bytes.fromhex("02000000a002")
WAIT = 5.0  # seconds any single expected frame may take; every wait is bounded by it


class Peer:
    """The TAP end: reads and writes frames, answers ARP, logs everything to a pcap."""

    def __init__(self, pcap: PcapWriter, name: str = TAP_NAME, kernel_ip: str = KERNEL_IP,
                 stack_ip: str = STACK_IP, vnet: bool = False) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        if vnet:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, TUN_F_CSUM)
        self.vnet = vnet
        self.last_vnet_header: tuple[int, ...] = ()
        self.name = name
        self.pcap = pcap
        self.kernel_mac = b""
        self.stack_ip = socket.inet_aton(stack_ip)
        self.kernel_ip = socket.inet_aton(kernel_ip)

    def send(self, frame: bytes) -> None:
        self.pcap.write(frame, time.time())
        os.write(self.fd, bytes(VNET_HDR.size) + frame if self.vnet else frame)

    def receive(self, accept: Callable[[EthernetFrame], bool], wait: float = WAIT) -> EthernetFrame:
        """The next frame `accept` wants, answering ARP on the way; TimeoutError after `wait`."""
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.fd], [], [], left)
            if not readable:
                break
            raw = os.read(self.fd, 65536)
            if self.vnet:
                self.last_vnet_header = VNET_HDR.unpack_from(raw)
                raw = raw[VNET_HDR.size:]
            self.pcap.write(raw, time.time())
            frame = parse_ethernet(raw)
            if frame.ethertype == ETHERTYPE_ARP:
                self._answer_arp(frame)
            if accept(frame):
                return frame
        raise TimeoutError(f"no matching frame within {wait:.1f} s")

    def _answer_arp(self, frame: EthernetFrame) -> None:
        arp = parse_arp(frame.payload)
        self.kernel_mac = arp.sender_mac
        if arp.op == ARP_REQUEST and arp.target_ip == self.stack_ip:
            reply = arp_reply_for(arp, STACK_MAC)
            frame = EthernetFrame(arp.sender_mac, STACK_MAC, ETHERTYPE_ARP, build_arp(reply))
            self.send(build_ethernet(frame, pad=True))

    def receive_ipv4(self, protocol: int, wait: float = WAIT) -> tuple[bytes, Ipv4Packet]:
        """(raw IP packet bytes, parsed packet) of the next IPv4 packet of `protocol` to us."""
        def wanted(frame: EthernetFrame) -> bool:
            if frame.ethertype != ETHERTYPE_IPV4:
                return False
            packet = parse_ipv4(frame.payload)
            return packet.protocol == protocol and packet.dst == self.stack_ip
        frame = self.receive(wanted, wait)
        return bytes(frame.payload), parse_ipv4(frame.payload)

    def receive_tcp(self, port: int, wait: float = WAIT) -> tuple[bytes, TcpSegment]:
        """(raw TCP bytes, segment) of the next segment to our `port`."""
        deadline = time.monotonic() + wait
        while True:
            _, packet = self.receive_ipv4(PROTO_TCP, max(0.01, deadline - time.monotonic()))
            segment = parse_tcp(packet.payload, packet.src, packet.dst)
            if segment.dst_port == port:
                return bytes(packet.payload), segment

    def send_ip(self, packet: Ipv4Packet) -> None:
        frame = EthernetFrame(self.kernel_mac, STACK_MAC, ETHERTYPE_IPV4, build_ipv4(packet))
        self.send(build_ethernet(frame))

    def send_tcp(self, segment: TcpSegment) -> None:
        self.send(build_tcp_frame(self.kernel_mac, STACK_MAC, self.stack_ip, self.kernel_ip, segment,
                                  ident=random.getrandbits(16)))


def udp_datagram(src: bytes, dst: bytes, src_port: int, dst_port: int, data: bytes) -> bytes:
    length = 8 + len(data)
    header = struct.pack("!HHHH", src_port, dst_port, length, 0)
    checksum = internet_checksum(header + data, pseudo_header_sum(src, dst, PROTO_UDP, length)) or 0xFFFF
    return struct.pack("!HHHH", src_port, dst_port, length, checksum) + data


def bring_up(peers: list[Peer]) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for peer in peers:
            index = ipr.link_lookup(ifname=peer.name)[0]
            ipr.addr("add", index=index, address=socket.inet_ntoa(peer.kernel_ip), prefixlen=24)
            ipr.link("set", index=index, state="up")


def report(name: str, ok: bool, detail: object = "") -> None:
    print(json.dumps({"check": name, "ok": bool(ok), "detail": detail}), flush=True)


class TcpScenario:
    """A kernel client connects to our port 80; we drive the server side segment by segment."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.client.setblocking(False)
        self.port = 80
        self.iss = 0xFFFFFF00  # near the wrap on purpose
        self.tsval = 1000
        self.rcv_nxt = 0
        self.snd_nxt = 0
        self.kernel_tsval = 0

    def segment(self, flags: TcpFlags, payload: bytes = b"", seq: int | None = None) -> TcpSegment:
        """A segment from us; a SYN carries the SYN options, every segment a fresh timestamp."""
        self.tsval += 1
        timestamp = (self.tsval, self.kernel_tsval)
        if flags & TcpFlags.SYN:
            options = TcpOptions(mss=1400, wscale=7, sack_permitted=True, timestamp=timestamp)
        else:
            options = TcpOptions(timestamp=timestamp)
        return TcpSegment(self.port, self.kernel_port, self.snd_nxt if seq is None else seq, self.rcv_nxt,
                          flags, 2048, options, payload)

    def handshake(self) -> None:
        err = self.client.connect_ex((STACK_IP, self.port))
        assert err == errno.EINPROGRESS, err
        raw_syn, syn = self.peer.receive_tcp(self.port)
        self.kernel_port = syn.src_port
        kernel_ip, stack_ip = self.peer.kernel_ip, self.peer.stack_ip
        rebuilt = build_tcp(syn, kernel_ip, stack_ip)
        report("syn_parsed_and_rebuilt_identically", rebuilt == raw_syn,
               {"syn": raw_syn.hex(), "rebuilt": rebuilt.hex(), "options": repr(syn.options)})
        report("syn_has_linux_options", syn.options.mss == 1460 and syn.options.sack_permitted
               and syn.options.timestamp is not None and syn.options.wscale is not None, repr(syn.options))
        self.kernel_tsval = syn.options.timestamp[0]
        self.rcv_nxt = (syn.seq + 1) & 0xFFFFFFFF
        self.snd_nxt = self.iss
        self.peer.send_tcp(self.segment(TcpFlags.SYN | TcpFlags.ACK))
        self.snd_nxt = (self.iss + 1) & 0xFFFFFFFF
        _, ack = self.peer.receive_tcp(self.port)
        _, writable, _ = select.select([], [self.client], [], WAIT)
        connected = bool(writable) and self.client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        echoed = ack.options.timestamp is not None and ack.options.timestamp[1] == self.tsval
        report("kernel_accepts_our_synack",
               connected and ack.flags == TcpFlags.ACK and ack.ack == self.snd_nxt and echoed,
               {"ack": ack.ack, "expected": self.snd_nxt, "ts": ack.options.timestamp})

    def kernel_sends_data(self) -> None:
        """The kernel's segments respect our MSS (1400 - 12 bytes of timestamps) and arrive intact."""
        data = random.randbytes(6000)
        self.client.sendall(data)
        received = bytearray()
        sizes = []
        while len(received) < len(data):
            _, seg = self.peer.receive_tcp(self.port)
            if seg.seq != self.rcv_nxt or not seg.payload:
                continue
            received += seg.payload
            sizes.append(len(seg.payload))
            self.rcv_nxt = (self.rcv_nxt + len(seg.payload)) & 0xFFFFFFFF
            self.kernel_tsval = seg.options.timestamp[0]
            self.peer.send_tcp(self.segment(TcpFlags.ACK))
        report("kernel_data_intact_and_mss_respected", bytes(received) == data and max(sizes) == 1388,
               {"sizes": sizes})

    def we_send_data_with_sack(self) -> None:
        """Send 3 segments, the first one late: the kernel must SACK the others and deliver all in order."""
        data = random.randbytes(3000)
        start = self.snd_nxt
        pieces = [(start + offset) & 0xFFFFFFFF for offset in (0, 1000, 2000)]
        self.peer.send_tcp(self.segment(TcpFlags.ACK | TcpFlags.PSH, data[1000:2000], seq=pieces[1]))
        _, dupack = self.peer.receive_tcp(self.port)
        expected_block = (pieces[1], pieces[2])
        report("kernel_sacks_out_of_order_data", dupack.ack == start and dupack.options.sack_blocks[:1] ==
               (expected_block,), {"ack": dupack.ack, "sack": dupack.options.sack_blocks,
                                   "expected": expected_block})
        self.peer.send_tcp(self.segment(TcpFlags.ACK | TcpFlags.PSH, data[2000:], seq=pieces[2]))
        self.peer.receive_tcp(self.port)
        self.peer.send_tcp(self.segment(TcpFlags.ACK | TcpFlags.PSH, data[:1000], seq=pieces[0]))
        self.snd_nxt = (start + 3000) & 0xFFFFFFFF
        got = bytearray()
        deadline = time.monotonic() + WAIT
        while len(got) < len(data) and time.monotonic() < deadline:
            select.select([self.client], [], [], 0.2)
            try:
                got += self.client.recv(65536)
            except BlockingIOError:
                continue
        report("kernel_reassembles_our_segments_across_seq_wrap", bytes(got) == data,
               {"received": len(got), "iss": self.iss})

    def frag_needed_shrinks_kernel_segments(self) -> None:
        """ICMP fragmentation-needed (MTU 1280) quoting an unacknowledged segment: Linux resends smaller."""
        self.client.sendall(random.randbytes(1388))
        segment = TcpSegment(0, 0, 0, 0, TcpFlags(0), 0)
        while not segment.payload:
            raw_ip, packet = self.peer.receive_ipv4(PROTO_TCP)
            segment = parse_tcp(packet.payload, packet.src, packet.dst)
        error = destination_unreachable(UNREACH_FRAG_NEEDED, raw_ip, mtu=1280)
        self.peer.send_ip(Ipv4Packet(self.peer.stack_ip, self.peer.kernel_ip, PROTO_ICMP, build_icmp(error)))
        _, resent = self.peer.receive_tcp(self.port)
        smaller = 0 < len(resent.payload) <= 1280 - 52
        report("kernel_honours_our_frag_needed", resent.seq == segment.seq and smaller,
               {"before": len(segment.payload), "after": len(resent.payload)})


def icmp_echo(peer: Peer) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    raw.settimeout(WAIT)
    payload = random.randbytes(56)
    raw.sendto(build_icmp(echo_request(0x1234, 7, payload)), (STACK_IP, 0))
    _, packet = peer.receive_ipv4(PROTO_ICMP)
    request = parse_icmp(packet.payload)
    reply = echo_reply_for(request)
    peer.send_ip(Ipv4Packet(peer.stack_ip, peer.kernel_ip, PROTO_ICMP, build_icmp(reply)))
    while True:
        data = raw.recv(2048)
        message = parse_icmp(parse_ipv4(data).payload)
        if message.type == ICMP_ECHO_REPLY:
            break
    report("kernel_receives_our_echo_reply", request.type == ICMP_ECHO_REQUEST and message.echo_id == 0x1234
           and message.echo_sequence == 7 and bytes(message.payload) == payload, "")
    raw.close()


def udp_fragments_in(peer: Peer) -> None:
    """The kernel fragments a 4000-byte UDP datagram; our Reassembler rebuilds it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = random.randbytes(4000)
    sock.sendto(data, (STACK_IP, 9999))
    reassembler = Reassembler()
    whole = None
    count = 0
    while whole is None:
        _, packet = peer.receive_ipv4(PROTO_UDP)
        count += 1
        whole = reassembler.add(packet, time.monotonic())
    report("we_reassemble_kernel_fragments", bytes(whole.payload[8:]) == data and count == 3,
           {"fragments": count, "length": len(whole.payload), "stats": repr(reassembler.stats)})
    sock.close()


def udp_fragments_out(peer: Peer) -> None:
    """Our fragments of a 5000-byte UDP datagram, sent last-first, reach a kernel socket whole."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((KERNEL_IP, 5555))
    sock.settimeout(WAIT)
    data = random.randbytes(5000)
    datagram = udp_datagram(peer.stack_ip, peer.kernel_ip, 4444, 5555, data)
    packet = Ipv4Packet(peer.stack_ip, peer.kernel_ip, PROTO_UDP, datagram, ident=0xBEEF, dont_fragment=False)
    fragments = fragment_ipv4(packet, 1500)
    for fragment in reversed(fragments):
        peer.send(build_ethernet(EthernetFrame(peer.kernel_mac, STACK_MAC, ETHERTYPE_IPV4, fragment)))
    got, source = sock.recvfrom(65536)
    report("kernel_reassembles_our_fragments",
           got == data and source == (STACK_IP, 4444) and len(fragments) == 4, {"fragments": len(fragments)})
    sock.close()


def port_unreachable(peer: Peer) -> None:
    """Our ICMP port unreachable, quoting the kernel's UDP datagram, becomes ECONNREFUSED."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((STACK_IP, 7777))
    sock.send(b"anyone there?")
    raw_ip, _ = peer.receive_ipv4(PROTO_UDP)
    error = destination_unreachable(UNREACH_PORT, raw_ip)
    peer.send_ip(Ipv4Packet(peer.stack_ip, peer.kernel_ip, PROTO_ICMP, build_icmp(error)))
    sock.settimeout(WAIT)
    try:
        sock.recv(100)
        outcome = "no error"
    except ConnectionRefusedError:
        outcome = "ECONNREFUSED"
    except TimeoutError:
        outcome = "timeout"
    report("kernel_accepts_our_port_unreachable", outcome == "ECONNREFUSED", outcome)
    sock.close()


def partial_checksum_matches_linux(peer: Peer) -> None:
    """With checksum offload Linux leaves the pseudo-header sum in the TCP checksum field
    (virtio NEEDS_CSUM); build_tcp(checksum="partial") must write exactly that."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    client.connect_ex((socket.inet_ntoa(peer.stack_ip), 80))
    raw_syn, syn = peer.receive_ipv4(PROTO_TCP)
    segment = parse_tcp(syn.payload, syn.src, syn.dst, verify_checksum=False)
    flags, _gso, _hdr_len, _gso_size, csum_start, csum_offset = peer.last_vnet_header
    rebuilt = build_tcp(segment, syn.src, syn.dst, checksum="partial")
    offloaded = flags & VNET_NEEDS_CSUM and csum_start == 34 and csum_offset == 16
    report("partial_checksum_matches_linux_offload", offloaded and rebuilt == bytes(syn.payload),
           {"vnet": peer.last_vnet_header, "linux": bytes(syn.payload).hex(), "ours": rebuilt.hex(),
            "ip_header": raw_syn[:20].hex()})
    client.close()


def main() -> int:
    with open(sys.argv[1], "wb") as pcap_file:
        pcap = PcapWriter(pcap_file)
        peer = Peer(pcap)
        offload_peer = Peer(pcap, OFFLOAD_TAP_NAME, OFFLOAD_KERNEL_IP, OFFLOAD_STACK_IP, vnet=True)
        bring_up([peer, offload_peer])
        tcp = TcpScenario(peer)
        # Fragments first: the frag-needed step lowers the kernel's path MTU towards us.
        steps: list[tuple[str, Callable[[], None]]] = [
            ("fragments_in", lambda: udp_fragments_in(peer)),
            ("fragments_out", lambda: udp_fragments_out(peer)),
            ("icmp_echo", lambda: icmp_echo(peer)),
            ("port_unreachable", lambda: port_unreachable(peer)),
            ("handshake", tcp.handshake),
            ("kernel_sends_data", tcp.kernel_sends_data),
            ("we_send_data", tcp.we_send_data_with_sack),
            ("frag_needed", tcp.frag_needed_shrinks_kernel_segments),
            ("partial_checksum", lambda: partial_checksum_matches_linux(offload_peer)),
        ]
        for name, step in steps:
            try:
                step()
            except Exception:
                report(f"step_{name}_crashed", False, traceback.format_exc())
                if name == "handshake":
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main())

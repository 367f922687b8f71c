"""Ethernet II frames, VLAN tags, MAC helpers and Ethernet/IPv4 ARP."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ArpPacket,
    EthernetFrame,
    MalformedPacket,
    arp_reply_for,
    arp_request,
    build_arp,
    build_ethernet,
    is_multicast_mac,
    mac_from_str,
    mac_to_str,
    parse_arp,
    parse_ethernet,
)

MAC_A = mac_from_str("02:00:00:00:00:0a")
MAC_B = mac_from_str("02:00:00:00:00:0b")
IP_A = socket.inet_aton("10.0.0.10")
IP_B = socket.inet_aton("10.0.0.11")

# An ARP request Linux 6.18 sent on a TAP (who-has 10.77.0.2 tell 10.77.0.1), captured by linux_peer.py.
LINUX_ARP_REQUEST_FRAME = bytes.fromhex(
    "ffffffffffff" "c6d363502ce8" "0806"
    "0001" "0800" "06" "04" "0001" "c6d363502ce8" "0a4d0001" "000000000000" "0a4d0002")
LINUX_MAC = bytes.fromhex("c6d363502ce8")


def test_mac_helpers() -> None:
    assert mac_from_str("02-00-00-00-00-0A") == b"\x02\x00\x00\x00\x00\x0a"
    assert mac_to_str(b"\x02\x00\x00\x00\x00\x0a") == "02:00:00:00:00:0a"
    assert is_multicast_mac(BROADCAST_MAC) and not is_multicast_mac(MAC_A)
    for bad in ("02:00:00:00:00", "02:00:00:00:00:zz", "0200.0000.000a", "002:00:00:00:00:01"):
        with pytest.raises(ValueError, match="bad MAC address"):
            mac_from_str(bad)


def test_parse_real_arp_request_frame() -> None:
    frame = parse_ethernet(LINUX_ARP_REQUEST_FRAME + bytes(18))  # padded to 60 bytes as a NIC would
    assert (frame.dst, frame.src, frame.ethertype) == (BROADCAST_MAC, LINUX_MAC, ETHERTYPE_ARP)
    assert frame.vlan_ids == ()
    arp = parse_arp(frame.payload)  # the padding after the 28-byte packet is ignored
    assert arp == ArpPacket(ARP_REQUEST, LINUX_MAC, socket.inet_aton("10.77.0.1"), bytes(6),
                            socket.inet_aton("10.77.0.2"))
    rebuilt = EthernetFrame(BROADCAST_MAC, LINUX_MAC, ETHERTYPE_ARP, build_arp(arp))
    assert build_ethernet(rebuilt) == LINUX_ARP_REQUEST_FRAME
    reply = arp_reply_for(arp, MAC_A)
    assert (reply.op, reply.sender_mac, reply.sender_ip) == (ARP_REPLY, MAC_A, socket.inet_aton("10.77.0.2"))
    assert (reply.target_mac, reply.target_ip) == (arp.sender_mac, arp.sender_ip)


def test_ethernet_round_trip_and_padding() -> None:
    frame = EthernetFrame(MAC_B, MAC_A, ETHERTYPE_ARP, build_arp(arp_request(MAC_A, IP_A, IP_B)))
    raw = build_ethernet(frame)
    assert len(raw) == 42 and len(build_ethernet(frame, pad=True)) == 60
    parsed = parse_ethernet(build_ethernet(frame, pad=True))
    assert (parsed.dst, parsed.src, parsed.ethertype) == (MAC_B, MAC_A, ETHERTYPE_ARP)
    assert parse_arp(parsed.payload) == arp_request(MAC_A, IP_A, IP_B)
    assert arp_request(MAC_A, IP_A, IP_A).is_gratuitous


def test_vlan_tags_are_skipped_and_reported() -> None:
    frame = EthernetFrame(MAC_B, MAC_A, ETHERTYPE_IPV4, b"payload", vlan_ids=(100, 7))
    raw = build_ethernet(frame)
    assert raw[12:14] == b"\x88\xa8" and raw[16:18] == b"\x81\x00" and raw[20:22] == b"\x08\x00"
    parsed = parse_ethernet(raw)
    assert parsed.vlan_ids == (100, 7) and parsed.ethertype == ETHERTYPE_IPV4
    assert bytes(parsed.payload) == b"payload"


@pytest.mark.parametrize(("raw", "message"), [
    (bytes(13), "ethernet: frame 13 bytes < 14-byte header"),
    (bytes(12) + b"\x81\x00\x00", "ethernet: VLAN tag truncated"),
    (bytes(12) + b"\x81\x00\x00\x01\x81\x00\x00\x02\x81\x00\x00\x03\x08\x00", "more than 2 VLAN tags"),
])
def test_malformed_ethernet(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedPacket, match=message):
        parse_ethernet(raw)


def test_ieee_802_3_length_frames_are_returned_not_rejected() -> None:
    parsed = parse_ethernet(bytes(12) + b"\x00\x26" + bytes(46))  # e.g. an STP BPDU
    assert parsed.ethertype == 0x26


@pytest.mark.parametrize(("offset", "value", "message"), [
    (1, 6, "hardware type 6"),
    (2, 0x86, "protocol type 0x86dd"),
    (4, 8, "address lengths 8/4"),
    (7, 3, "opcode 3"),
])
def test_arp_other_than_ethernet_ipv4_is_rejected(offset: int, value: int, message: str) -> None:
    raw = bytearray(build_arp(arp_request(MAC_A, IP_A, IP_B)))
    raw[offset] = value
    if offset == 2:
        raw[3] = 0xDD
    with pytest.raises(MalformedPacket, match=message):
        parse_arp(bytes(raw))
    with pytest.raises(MalformedPacket, match="arp: packet 27 bytes < 28"):
        parse_arp(bytes(27))


macs = st.binary(min_size=6, max_size=6)
addresses = st.binary(min_size=4, max_size=4)


@given(st.sampled_from([ARP_REQUEST, ARP_REPLY]), macs, addresses, macs, addresses)
def test_arp_round_trip(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> None:
    packet = ArpPacket(op, sha, spa, tha, tpa)
    assert parse_arp(build_arp(packet)) == packet


@given(macs, macs, st.integers(0x0600, 0xFFFF), st.lists(st.integers(0, 4095), max_size=2),
       st.binary(max_size=100))
def test_ethernet_round_trip(dst: bytes, src: bytes, ethertype: int, vlans: list[int],
                             payload: bytes) -> None:
    if ethertype in (0x8100, 0x88A8):
        ethertype = 0x0800
    parsed = parse_ethernet(build_ethernet(EthernetFrame(dst, src, ethertype, payload, tuple(vlans))))
    assert (parsed.dst, parsed.src, parsed.ethertype, bytes(parsed.payload), parsed.vlan_ids) == (
        dst, src, ethertype, payload, tuple(vlans))

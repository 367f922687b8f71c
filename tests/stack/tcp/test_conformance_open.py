"""RFC 9293 opening rules not covered elsewhere: SYN_RECV remembers where it came from (MUST-11), a
passive OPEN leaves other connections alone and may share a port with a connection being opened
(MUST-41, MUST-42), local addresses in OPEN (MUST-43..45) and address validation (MUST-46, MUST-63)."""

from __future__ import annotations

import errno
import random
import socket

import pytest

from stack.tcp import TcpLayer, TcpSocket
from stack.wire.tcp import TcpSegment

from .segments import LOCAL, REMOTE, Tester, seg

SECOND_LOCAL = "10.0.0.3"  # another address of the same host
SUBNET_BROADCAST = "10.0.0.255"


def two_address_layer() -> TcpLayer:
    """A layer whose routes leave from LOCAL but which also owns SECOND_LOCAL and knows its subnet's
    broadcast address."""
    return TcpLayer(
        secret=b"test-secret-0123",
        rng=random.Random(3),
        route=lambda ip, now: (LOCAL, 1500),
        is_local_address=lambda ip: ip in (LOCAL, SECOND_LOCAL),
        is_broadcast_address=lambda ip: ip == SUBNET_BROADCAST,
        isn_source=lambda *_: 1000,
    )


def test_simultaneous_open_reset_in_syn_received_refuses_the_connect() -> None:
    """MUST-11: SYN_RECV reached from SYN_SENT (an active OPEN) goes to CLOSED on a RST and the
    application learns the connection was refused; reached from LISTEN it would go back to listening
    (test_reset_of_a_syn_queue_entry_just_removes_it)."""
    t = Tester()
    sock = t.connect(80)
    t.poll()
    t.send(seg("S", seq=5000, sport=80, dport=50000, mss=1460))  # the peer's SYN crosses ours
    (synack,) = t.poll()
    assert sock.state == "SYN_RECV" and synack.flags == seg("SA").flags
    t.send(seg("R", seq=5001, sport=80, dport=50000))
    assert sock.state == "CLOSE" and sock.error == errno.ECONNREFUSED
    assert t.layer.tables.snapshot().listening == ()  # an active open never turns into a listener


def test_listen_on_a_port_whose_connection_is_still_opening() -> None:
    """MUST-42 and MUST-41: with SO_REUSEADDR a listener can share the local port of a connection in
    SYN_SENT; the listener does not disturb that connection, and new SYNs reach the listener."""
    t = Tester()
    client = t.layer.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    client.bind((LOCAL, 7000))
    assert client.connect_ex((REMOTE, 80), t.now) == errno.EINPROGRESS
    (syn,) = t.poll()
    listener = t.layer.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOCAL, 7000))
    listener.listen(8)
    # The connection being opened completes as if the listener did not exist...
    t.send(seg("SA", seq=9000, ack=syn.seq + 1, sport=80, dport=7000, mss=1460))
    (ack,) = t.poll()
    assert client.state == "ESTABLISHED" and ack.ack == 9001
    # ...and a SYN from someone else reaches the listener.
    t.send(seg("S", seq=5000, sport=40000, dport=7000, mss=1460))
    (synack,) = t.poll()
    assert synack.flags == seg("SA").flags and synack.dst_port == 40000
    assert t.layer.tables.snapshot().listening[0].syn_queue == 1
    assert client.state == "ESTABLISHED"


def reusing_listener(t: Tester, port: int) -> TcpSocket:
    sock = t.layer.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do (Linux needs it here too)
    sock.bind((LOCAL, port))
    sock.listen(8)
    return sock


def test_established_connections_survive_a_new_listener_on_their_port() -> None:
    """MUST-41: a passive OPEN creates a LISTEN record or fails; it never changes an existing connection."""
    t = Tester()
    first = reusing_listener(t, 80)
    child = t.accept_one(first)
    first.close(t.now)  # the accepted connection outlives its listener
    second = reusing_listener(t, 80)
    assert child.state == "ESTABLISHED" and second.state == "LISTEN"
    t.send(seg("PA", seq=5001, ack=1001, dport=80, data=b"still here"), at=0.1)
    assert child.recv(100) == b"still here"
    with pytest.raises(OSError) as info:
        reusing_listener(t, 80)  # a second listener on the same address: an error, nothing changed
    assert info.value.errno == errno.EADDRINUSE
    assert child.state == "ESTABLISHED" and second.state == "LISTEN"


def test_syn_leaves_from_the_address_open_names() -> None:
    """MUST-43 and MUST-45: bind() names the local address; the SYN and everything after it use it,
    even when the route would have chosen another of the host's addresses."""
    layer = two_address_layer()
    sock = layer.socket()
    sock.bind((SECOND_LOCAL, 0))
    assert sock.connect_ex((REMOTE, 80), 0.0) == errno.EINPROGRESS
    ((src, dst, syn),) = layer.poll(0.0)
    assert (src, dst) == (SECOND_LOCAL, REMOTE) and syn.flags == seg("S").flags
    assert sock.getsockname()[0] == SECOND_LOCAL


@pytest.mark.parametrize("bound", [None, "0.0.0.0"])
def test_syn_without_a_local_address_asks_the_route(bound: str | None) -> None:
    """MUST-44: with no local address (unbound, or bound to the wildcard) the source address comes from
    the route to the destination."""
    layer = two_address_layer()
    sock = layer.socket()
    if bound is not None:
        sock.bind((bound, 0))
    assert sock.connect_ex((REMOTE, 80), 0.0) == errno.EINPROGRESS
    ((src, _dst, _syn),) = layer.poll(0.0)
    assert src == LOCAL and sock.getsockname()[0] == LOCAL


@pytest.mark.parametrize("address", ["224.0.0.1", "239.255.255.250", "255.255.255.255", SUBNET_BROADCAST])
def test_open_to_a_broadcast_or_multicast_address_is_refused(address: str) -> None:
    """MUST-46: connect() to a broadcast or multicast address fails at once (Linux: ENETUNREACH) and
    sends nothing."""
    layer = two_address_layer()
    sock = layer.socket()
    with pytest.raises(OSError) as info:
        sock.connect((address, 80), 0.0)
    assert info.value.errno == errno.ENETUNREACH
    assert layer.poll(0.0) == []
    assert list(layer.tables.connections()) == []


@pytest.mark.parametrize("source", ["224.0.0.5", "255.255.255.255", "0.0.0.0", "240.0.0.1", SUBNET_BROADCAST])
def test_syn_from_an_invalid_source_is_ignored(source: str) -> None:
    """MUST-63: a SYN whose source cannot be a host (multicast, broadcast, unspecified, reserved) is
    dropped silently: no SYN-ACK, no SYN queue entry, and no RST to such an address either."""
    layer = two_address_layer()
    listener = layer.socket()
    listener.bind((LOCAL, 80))
    listener.listen(8)
    syn = seg("S", seq=5000, mss=1460)
    layer.segment_arrives(source, LOCAL, syn, 0.0)
    assert layer.poll(0.0) == []
    assert layer.tables.snapshot().listening[0].syn_queue == 0
    stray: TcpSegment = seg("A", seq=5001, ack=77, dport=81)  # to a closed port
    layer.segment_arrives(source, LOCAL, stray, 0.1)
    assert layer.poll(0.1) == []
    # The same SYN from a unicast source is answered.
    layer.segment_arrives(REMOTE, LOCAL, syn, 0.2)
    ((_src, dst, synack),) = layer.poll(0.2)
    assert dst == REMOTE and synack.flags == seg("SA").flags

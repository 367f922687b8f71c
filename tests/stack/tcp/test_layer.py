"""TcpLayer to TcpLayer: two stacks back to back with an explicit clock, plus the layer's own duties
(ICMP errors, keepalive, tables, counters, trace events, an idle layer that sleeps)."""

from __future__ import annotations

import errno
import hashlib
import random
import socket

import pytest

from stack.tcp import IcmpError, TcpConfig, TcpSocket
from stack.wire.tcp import TcpSegment

from .segments import LOCAL, REMOTE, Tester, Wire, seg


def serve(wire: Wire, port: int = 80) -> TcpSocket:
    listener = wire.b.socket()
    listener.bind((REMOTE, port))
    listener.listen(16)
    return listener


def dial(wire: Wire, port: int = 80) -> TcpSocket:
    client = wire.a.socket()
    assert client.connect_ex((REMOTE, port), wire.now) == errno.EINPROGRESS
    return client


def pump(wire: Wire, sender: TcpSocket, receiver: TcpSocket, data: bytes, limit: float) -> bytes:
    """Write `data` into `sender` as fast as it takes it, read `receiver` until EOF."""
    sent = 0
    got = bytearray()
    closed = False
    while True:
        if sent < len(data):
            try:
                sent += sender.send(memoryview(data)[sent : sent + 65536])
            except BlockingIOError:
                pass
        elif not closed:
            sender.shutdown(socket.SHUT_WR, wire.now)
            closed = True
        try:
            while True:
                chunk = receiver.recv(65536)
                if not chunk:
                    return bytes(got)
                got += chunk
        except BlockingIOError:
            pass
        if wire.now > limit:
            raise AssertionError(f"transfer incomplete at t={wire.now}: {len(got)} of {len(data)} bytes")
        wire.run(wire.now + 0.002)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("congestion", ["cubic", "newreno"])
def test_bulk_transfer_both_ways_then_clean_close(congestion: str) -> None:
    config = TcpConfig(congestion=congestion, time_wait=1.0)
    wire = Wire(config, config)
    listener = serve(wire)
    client = dial(wire)
    wire.run(0.05)
    server, _ = listener.accept()
    upload = random.Random(1).randbytes(600_000)
    assert sha(pump(wire, client, server, upload, limit=30)) == sha(upload)
    download = random.Random(2).randbytes(300_000)
    assert sha(pump(wire, server, client, download, limit=60)) == sha(download)
    client.close(wire.now)
    server.close(wire.now)
    listener.close(wire.now)
    wire.run(wire.now + 2.0)
    assert list(wire.a.tables.connections()) == [] and list(wire.b.tables.connections()) == []
    assert wire.a.next_deadline() is None and wire.b.next_deadline() is None
    assert wire.a.tables.snapshot().bound == () and wire.b.tables.snapshot().bound == ()
    assert wire.a.counters()["RetransSegs"] == 0


@pytest.mark.parametrize("sack", [True, False])
@pytest.mark.parametrize("seed", [3, 4])
def test_transfer_survives_random_loss_byte_exact(sack: bool, seed: int) -> None:
    rng = random.Random(seed)
    config = TcpConfig(sack=sack, time_wait=1.0)

    def lossy(src: str, segment: TcpSegment) -> bool:
        return rng.random() < 0.03

    wire = Wire(config, config, drop=lossy, seed=seed)
    listener = serve(wire)
    client = dial(wire)
    wire.run_until(lambda: listener.readable, limit=30)
    server, _ = listener.accept()
    data = random.Random(seed).randbytes(300_000)
    assert sha(pump(wire, client, server, data, limit=200)) == sha(data)
    assert wire.a.counters()["RetransSegs"] > 0
    client.close(wire.now)
    server.close(wire.now)
    wire.run(wire.now + 120)
    assert list(wire.a.tables.connections()) == [] and list(wire.b.tables.connections()) == []


def test_reader_that_stops_makes_the_sender_probe_then_resume() -> None:
    config = TcpConfig(rcvbuf=20_000, time_wait=1.0)
    wire = Wire(config, config)
    listener = serve(wire)
    client = dial(wire)
    wire.run(0.05)
    server, _ = listener.accept()
    client.send(bytes(100_000))
    wire.run(3.0)
    (snap,) = wire.a.snapshots()
    assert snap.snd_wnd == 0 and snap.send_queue > 0
    assert wire.a.counters()["TCPWinProbe"] >= 2
    received = 0
    while received < 100_000:
        try:
            received += len(server.recv(65536))
        except BlockingIOError:
            wire.run(wire.now + 0.01)
        assert wire.now < 20
    assert received == 100_000


def test_simultaneous_open_between_two_layers() -> None:
    wire = Wire()
    a = wire.a.socket()
    a.bind((LOCAL, 5000))
    b = wire.b.socket()
    b.bind((REMOTE, 6000))
    assert a.connect_ex((REMOTE, 6000), wire.now) == errno.EINPROGRESS
    assert b.connect_ex((LOCAL, 5000), wire.now) == errno.EINPROGRESS
    wire.run(0.1)
    assert a.state == b.state == "ESTABLISHED"
    a.send(b"hello")
    wire.run(0.2)
    assert b.recv(10) == b"hello"


def test_idle_layer_has_no_deadline_and_polls_nothing() -> None:
    t = Tester()
    assert t.layer.next_deadline() is None and t.layer.poll(5.0) == []
    t.open_client()
    assert t.layer.next_deadline() is None  # an idle ESTABLISHED connection has no timer


def test_tables_show_the_three_tables() -> None:
    t = Tester()
    listener = t.listen(80)
    t.send(seg("S", seq=5000, mss=1460, sport=41000))
    t.poll()
    child = t.accept_one(listener)
    tables = t.layer.tables.snapshot()
    assert [(e.port, e.state) for e in tables.bound] == [(80, "LISTEN"), (80, "ESTABLISHED")]
    assert [(lst.port, lst.syn_queue, lst.accept_queue) for lst in tables.listening] == [(80, 1, 0)]
    assert sorted(s.state for s in tables.established) == ["ESTABLISHED", "SYN_RECV"]
    assert child.state == "ESTABLISHED"


def test_trace_events_follow_linux_tracepoints() -> None:
    t = Tester()
    t.open_client()
    changes = [
        (e.fields["oldstate"], e.fields["newstate"]) for e in t.events if e.name == "inet_sock_set_state"
    ]
    assert changes == [("CLOSE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")]
    segment_in = next(e for e in t.events if e.name == "tcp_segment_in")
    assert segment_in.fields["flags"] == "S." and segment_in.local_port == 50000


# ---------------------------------------------------------------- keepalive


def test_keepalive_probes_a_silent_peer_then_resets() -> None:
    t = Tester(keepalive_time=10.0, keepalive_intvl=2.0, keepalive_probes=3)
    sock = t.open_client()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    t.poll()
    probe = seg("A", seq=1000, ack=5001, sport=50000, dport=80)
    assert t.deadline() == pytest.approx(10.0)
    t.expect(probe, at=10.0)
    t.send(seg("A", seq=5001, ack=1001, sport=80, dport=50000), at=10.01)  # the peer answers
    t.expect_nothing()
    assert t.deadline() == pytest.approx(12.0)
    t.expect_nothing(at=12.0)  # activity seen: rescheduled from the last segment received
    assert t.deadline() == pytest.approx(20.01)
    for when in (20.01, 22.01, 24.01):
        t.expect(probe, at=when)
    t.expect(seg("RA", seq=1001, ack=5001, win=0, sport=50000, dport=80), at=26.01)
    assert sock.state == "CLOSE" and sock.error == errno.ETIMEDOUT


# ---------------------------------------------------------------- ICMP errors


def icmp(kind: str, code: int, seq: int, mtu: int | None = None) -> IcmpError:
    return IcmpError(kind, code, LOCAL, REMOTE, 50000, 80, seq, mtu)


def test_port_unreachable_aborts_a_connect_like_linux() -> None:
    t = Tester()
    sock = t.connect(80)
    t.poll()
    t.layer.icmp_error(icmp("unreachable", 3, seq=1000), now=0.01)
    assert sock.state == "CLOSE" and sock.error == errno.ECONNREFUSED


def test_icmp_with_a_sequence_outside_the_flight_is_ignored() -> None:
    t = Tester()
    sock = t.connect(80)
    t.poll()
    t.layer.icmp_error(icmp("unreachable", 3, seq=77), now=0.01)
    assert sock.state == "SYN_SENT" and t.layer.counters()["OutOfWindowIcmps"] == 1


def test_host_unreachable_is_soft_when_established() -> None:
    t = Tester(retries2=1)
    sock = t.open_client()
    sock.send(b"x")
    t.poll(at=1.0)
    t.layer.icmp_error(icmp("unreachable", 1, seq=1001), now=1.05)
    assert sock.state == "ESTABLISHED"
    t.poll(at=1.2)
    t.poll(at=1.6)
    assert sock.state == "CLOSE" and sock.error == errno.EHOSTUNREACH  # the soft error explains the timeout


def test_fragmentation_needed_lowers_the_mss_and_resends() -> None:
    t = Tester()
    sock = t.open_client()
    sock.send(bytes(1460))
    t.poll(at=1.0)
    t.layer.icmp_error(icmp("frag_needed", 4, seq=1001, mtu=1200), now=1.01)
    out = t.poll()
    assert [len(s.payload) for s in out] == [1160, 300]
    assert t.connection().send_mss == 1160


def test_fatal_icmp_drops_a_syn_queue_entry_and_a_soft_one_does_not() -> None:
    t = Tester()
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460))
    t.poll()
    quoted = IcmpError("unreachable", 1, LOCAL, REMOTE, 80, 40000, 1000)  # host unreachable: soft
    t.layer.icmp_error(quoted, now=0.01)
    assert t.layer.tables.snapshot().listening[0].syn_queue == 1
    quoted = IcmpError("unreachable", 3, LOCAL, REMOTE, 80, 40000, 1000)  # port unreachable: fatal
    t.layer.icmp_error(quoted, now=0.02)
    assert t.layer.tables.snapshot().listening[0].syn_queue == 0


@pytest.mark.parametrize("sack", [True, False])
def test_lossy_transfer_across_the_sequence_wrap(sack: bool) -> None:
    rng = random.Random(11)
    config = TcpConfig(sack=sack, time_wait=1.0)
    wire = Wire(config, config, drop=lambda src, segment: rng.random() < 0.02, reorder=0.05)
    wire.a.isn_source = lambda *_: 2**32 - 100_000  # the client's data crosses 2**32 early
    wire.b.isn_source = lambda *_: 2**32 - 1
    listener = serve(wire)
    client = dial(wire)
    wire.run_until(lambda: listener.readable, limit=30)
    server, _ = listener.accept()
    data = random.Random(5).randbytes(400_000)
    assert sha(pump(wire, client, server, data, limit=300)) == sha(data)
    reply = random.Random(6).randbytes(50_000)
    assert sha(pump(wire, server, client, reply, limit=600)) == sha(reply)
    (snapshot,) = wire.a.snapshots()
    assert snapshot.snd_una < 400_000  # wrapped past zero

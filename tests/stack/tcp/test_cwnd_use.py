"""cwnd grows only while it limits the sender (stack.tcp.cwnd_use; RFC 7661, RFC 9438 5.8, Linux's
tcp_is_cwnd_limited): unit checks of the verdict, and a transfer held back by the peer's window."""

from __future__ import annotations

from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
from stack.tcp.config import TcpConfig
from stack.tcp.congestion.cubic import Cubic
from stack.tcp.cwnd_use import CwndUse

MSS = 1000


def test_a_pass_stopped_by_cwnd_allows_growth_for_one_window() -> None:
    use = CwndUse(iss=0)
    use.after_sending(flight=10_000, cwnd=10_000, snd_una=0, snd_nxt=10_000)
    assert use.limited and use.allows_growth(10_000, in_slow_start=False)
    # ACKs for that window keep the verdict even though a smaller flight follows before SND.UNA passes it
    use.after_sending(flight=4_000, cwnd=12_000, snd_una=6_000, snd_nxt=10_000)
    assert use.limited
    # once SND.UNA has passed the window the verdict was made for, a pass below cwnd ends it
    use.after_sending(flight=4_000, cwnd=12_000, snd_una=10_000, snd_nxt=14_000)
    assert not use.limited and not use.allows_growth(12_000, in_slow_start=False)


def test_slow_start_grows_while_cwnd_is_below_twice_the_largest_flight() -> None:
    use = CwndUse(iss=0)
    use.after_sending(flight=6_000, cwnd=10_000, snd_una=0, snd_nxt=6_000)  # the app wrote 6 segments
    assert not use.limited
    assert use.allows_growth(10_000, in_slow_start=True)  # 10 < 2 * 6
    assert not use.allows_growth(12_000, in_slow_start=True)  # 12 >= 2 * 6
    assert not use.allows_growth(10_000, in_slow_start=False)


def test_a_larger_flight_raises_the_record_without_waiting_for_the_window() -> None:
    use = CwndUse(iss=0)
    use.after_sending(flight=2_000, cwnd=10_000, snd_una=0, snd_nxt=2_000)
    use.after_sending(flight=5_000, cwnd=10_000, snd_una=0, snd_nxt=5_000)
    assert use.largest_flight == 5_000


def test_an_application_limited_ack_does_not_grow_cubic() -> None:
    cc = Cubic(MSS)
    before = cc.cwnd
    cc.on_ack(5 * MSS, 1.0, 0.01, cwnd_limited=False)
    assert cc.cwnd == before and cc.min_rtt == 0.01  # the RTT sample still counts
    cc.on_ack(5 * MSS, 1.1, 0.01, cwnd_limited=True)
    assert cc.cwnd == before + 5 * MSS


def test_a_transfer_held_back_by_the_peers_window_keeps_cwnd_near_that_window() -> None:
    """4 MB into a 64 KB receive window: the flight never exceeds about 64 KB, so cwnd stays within twice
    that (slow start's allowance) instead of growing with every ACK to megabytes."""
    sender = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=TcpConfig(sndbuf=1 << 20))
    receiver = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, tcp=TcpConfig(rcvbuf=1 << 16))
    runner = Runner([sender, receiver], [MemoryWire(sender, receiver)])
    listener = receiver.socket()
    listener.bind(("10.0.0.2", 8080))
    listener.listen(1)
    client = sender.socket()
    client.connect(("10.0.0.2", 8080))
    server, _ = listener.accept()
    client.setblocking(False)
    server.setblocking(False)
    sent = received = 0
    total = 4 << 20
    while received < total:
        while sent < total:
            try:
                sent += client.send(b"x" * min(65536, total - sent))
            except BlockingIOError:
                break
        try:
            received += len(server.recv(1 << 20))
        except BlockingIOError:
            runner.run_until(lambda: server.readable, timeout=5.0)
    (connection,) = [c for c in sender.tcp.tables.connections() if c.state.name == "ESTABLISHED"]
    assert connection.cc.cwnd <= 2 * (1 << 16) + 2 * connection.send_mss, connection.cc.cwnd

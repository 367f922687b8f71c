"""What a tutorial keeps of the machine-wide kernel tracepoints: the lab's addresses, and for counts
and sequences the run's own 4-tuples (every pair lab shares 10.0.0.1 and 10.0.0.2)."""

from __future__ import annotations

from types import SimpleNamespace

from lab.kernel.tracepoints import TraceEvent, parse_trace_line
from lab.tutorials.ladder import StateMark
from lab.tutorials.observe import RUN_PORTS_HIGH, RUN_PORTS_LOW, Observer, events_of_lab, run_ports

LAB = {"10.0.0.1", "10.0.0.2"}


def state(sport: int, dport: int, saddr: str, daddr: str, old: str, new: str, time: str = "100.0") -> str:
    return (f"  <idle>-0 [000] ..s1. {time}: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP "
            f"sport={sport} dport={dport} saddr={saddr} daddr={daddr} saddrv6=::1 daddrv6=::1 "
            f"oldstate=TCP_{old} newstate=TCP_{new}")


def reset(name: str, src: str, dst: str) -> str:
    if name == "tcp_send_reset":
        return (f"  python-9 [001] ..... 100.5: tcp_send_reset: skbaddr=0 skaddr=0 src={src} dest={dst} "
                "state=TCP_ESTABLISHED reason=TCP_ABORT_ON_CLOSE")
    (saddr, sport), (daddr, dport) = src.split(":"), dst.split(":")
    return (f"  python-9 [001] ..... 100.5: tcp_receive_reset: skaddr=0 sport={sport} dport={dport} "
            f"family=AF_INET saddr={saddr} daddr={daddr} saddrv6=::1 daddrv6=::1 sock_cookie=1")


def parsed(lines: list[str]) -> list[TraceEvent]:
    return [event for event in map(parse_trace_line, lines) if event is not None]


def observer_over(events: list[TraceEvent]) -> Observer:
    """An Observer whose kernel side is these events (its stack side is not used here)."""
    observer = Observer.__new__(Observer)
    observer.addresses = LAB
    observer.kernel_trace = SimpleNamespace(events=lambda: events)  # type: ignore[assignment]
    observer.wall_offset = 1000.0
    return observer


def test_only_events_between_the_labs_addresses_are_kept() -> None:
    events = parsed([
        state(7400, 0, "10.0.0.1", "0.0.0.0", "CLOSE", "LISTEN"),  # a listener: no peer yet
        state(7400, 40000, "10.0.0.1", "10.0.0.2", "SYN_RECV", "ESTABLISHED"),
        state(7400, 40000, "192.168.9.1", "192.168.9.2", "SYN_RECV", "ESTABLISHED"),  # another lab's
        state(22, 5555, "10.0.0.1", "172.16.0.9", "ESTABLISHED", "CLOSE"),  # the machine's own
    ])
    kept = events_of_lab(events, LAB)
    assert [(e.fields["saddr"], e.fields["newstate"]) for e in kept] == [
        ("10.0.0.1", "LISTEN"), ("10.0.0.1", "ESTABLISHED")]


def test_resets_are_counted_on_the_runs_own_connections() -> None:
    mine = (("10.0.0.1", 7402), ("10.0.0.2", 40001))
    events = parsed([
        reset("tcp_send_reset", "10.0.0.1:7402", "10.0.0.2:40001"),
        reset("tcp_receive_reset", "10.0.0.2:40001", "10.0.0.1:7402"),  # either end first
        reset("tcp_send_reset", "10.0.0.1:7402", "10.0.0.2:40999"),  # the same ports in a parallel lab
    ])
    observer = observer_over(events)
    assert observer.kernel_resets([mine]) == {"tcp_send_reset": 1, "tcp_receive_reset": 1}
    assert observer.kernel_resets() == {"tcp_send_reset": 2, "tcp_receive_reset": 1}


def test_state_sequences_and_marks_follow_one_4_tuple() -> None:
    events = parsed([
        state(0, 7400, "10.0.0.1", "10.0.0.2", "CLOSE", "SYN_SENT", "100.1"),
        state(41000, 7400, "10.0.0.1", "10.0.0.2", "SYN_SENT", "ESTABLISHED", "100.2"),
        state(41001, 7400, "10.0.0.1", "10.0.0.2", "SYN_SENT", "ESTABLISHED", "100.3"),  # another client
    ])
    observer = observer_over(events)
    assert observer.kernel_states(("10.0.0.1", 41000), ("10.0.0.2", 7400)) == [
        "CLOSE", "SYN_SENT", "ESTABLISHED"]
    observer.stack_events = lambda: []  # type: ignore[method-assign]
    marks = observer.marks()
    assert marks[0] == StateMark(1100.1, ("10.0.0.1", 0), "SYN_SENT", "kernel", ("10.0.0.2", 7400))
    assert [m.endpoint[1] for m in marks[1:]] == [41000, 41001]


def test_each_client_gets_its_own_syn_sent_when_it_connects_again_and_again() -> None:
    events = parsed([
        state(0, 7403, "10.0.0.1", "10.0.0.2", "CLOSE", "SYN_SENT", "100.1"),
        state(41000, 7403, "10.0.0.1", "10.0.0.2", "SYN_SENT", "ESTABLISHED", "100.2"),
        state(0, 7403, "10.0.0.1", "10.0.0.2", "CLOSE", "SYN_SENT", "100.3"),
        state(41001, 7403, "10.0.0.1", "10.0.0.2", "SYN_SENT", "ESTABLISHED", "100.4"),
        state(41000, 7403, "10.0.0.1", "10.0.0.2", "ESTABLISHED", "CLOSE", "100.5"),
    ])
    observer = observer_over(events)
    first = observer.kernel_events()[0]
    assert observer.kernel_states(("10.0.0.1", 41000), ("10.0.0.2", 7403)) == [
        "CLOSE", "SYN_SENT", "ESTABLISHED", "CLOSE"]
    assert observer.kernel_states(("10.0.0.1", 41001), ("10.0.0.2", 7403)) == [
        "CLOSE", "SYN_SENT", "ESTABLISHED"]
    assert first.fields["sport"] == "0"


def test_a_run_keeps_its_own_block_of_ports() -> None:
    session = SimpleNamespace(metrics={})
    session.metric = session.metrics.__setitem__
    first = run_ports(session, 7)  # type: ignore[arg-type]
    assert first >= RUN_PORTS_LOW and first + 7 <= RUN_PORTS_HIGH and first % 7 == RUN_PORTS_LOW % 7
    assert run_ports(session, 7) == first  # type: ignore[arg-type]
    assert session.metrics["ports"] == {"first": first, "count": 7}
    others = {run_ports(SimpleNamespace(metrics={}, metric=lambda *a: None), 7) for _ in range(50)}  # type: ignore[arg-type]
    assert len(others) > 40, "runs rarely share a block"

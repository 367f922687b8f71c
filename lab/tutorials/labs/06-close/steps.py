"""Tutorial 6: how connections end, on the close experiment's exchanges, watched and captured."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from lab.experiments.close import CloseScenarios, Exchange, exchange_checks
from lab.experiments.stack_answers import find_connection
from lab.kernel.sysctls import read_sysctl
from lab.tutorials import Session, Step
from lab.tutorials.observe import (
    Observer,
    capturing_both,
    draw_ladders,
    kernel_row_text,
    kernel_rows,
    run_ports,
    stack_connections,
    watching,
)

PORTS = 7  # the close scenarios use the first six, the FIN_WAIT2 look the seventh
# Bytes each half-close exchange sends: as `lab run close`, more than the windows hold, so the echo's tail is
# still on its way when the sender's FIN goes out (with 64 KiB the whole echo can be read before SHUT_WR).
SIZE = 262144
TIME_WAIT_SECONDS = 60  # Linux's TCP_TIMEWAIT_LEN


def first_port(session: Session) -> int:
    """The first of this run's ports: its own, so two runs on one machine (whose pair labs share
    10.0.0.1 and 10.0.0.2, and the machine-wide tracepoints) never read each other's events."""
    return run_ports(session, PORTS)


def fin_wait_port(session: Session) -> int:
    return first_port(session) + PORTS - 1


def scenarios(session: Session, observer: Observer) -> CloseScenarios:
    scenario = CloseScenarios(session.lab, SIZE, first_port(session))
    scenario.stack = observer.stack
    scenario.kernel_trace = observer.kernel_trace
    return scenario


def run_exchange(session: Session, observer: Observer, exchange: Callable[[], Exchange]) -> Exchange:
    """Run one exchange and tell it, knowing whether a RST reached the active closer meanwhile."""
    before = observer.stack_resets()["tcp_receive_reset"] + observer.kernel_resets()["tcp_receive_reset"]
    done = exchange()
    after = observer.stack_resets()["tcp_receive_reset"] + observer.kernel_resets()["tcp_receive_reset"]
    tell(session, done, resets_received=after - before)
    return done


def time_wait_ended_by_rst(exchange: Exchange, resets_received: int) -> bool:
    """The active closer reached TIME_WAIT and a RST then ended it: the peer, already closed, answered
    the ACK TIME_WAIT sends for a retransmitted FIN with a RST ("TIME_WAIT assassination", RFC 1337;
    Linux does the same unless net.ipv4.tcp_rfc1337 is 1). Seen on a loaded machine."""
    if exchange.resets or resets_received < 1:
        return False
    if exchange.active == "stack":
        return exchange.stack_state is None and exchange.stack_states[-2:] == ["TIME_WAIT", "CLOSE"]
    return exchange.kernel_state is None and (exchange.kernel_states or [])[-2:] == ["FIN_WAIT2", "CLOSE"]


def tell(session: Session, exchange: Exchange, *, resets_received: int = 0) -> None:
    """Both sides' state sequences into the report, and the exchange's verdicts as checks."""
    kernel = exchange.kernel_states if exchange.kernel_states is not None else ["(not traced)"]
    session.states("kernel", exchange.name, kernel)
    session.states("stack", exchange.name, exchange.stack_states)
    session.say(f"{exchange.name} (active closer: {exchange.active}): kernel {' > '.join(kernel) or '-'}; "
                f"stack {' > '.join(exchange.stack_states) or '-'}; afterwards kernel "
                f"{exchange.kernel_state or 'gone'}, stack {exchange.stack_state or 'gone'}")
    ended_by_rst = time_wait_ended_by_rst(exchange, resets_received)
    session.metric(exchange.name, {
        "active": exchange.active, "kernel_state": exchange.kernel_state, "stack_state": exchange.stack_state,
        "kernel_states": exchange.kernel_states, "stack_states": exchange.stack_states,
        "resets": exchange.resets, "kernel_resets": exchange.kernel_resets,
        "stack_resets": exchange.stack_resets, "time_wait_ended_by_rst": ended_by_rst})
    if ended_by_rst:
        session.say(f"{exchange.name}: the {exchange.active}'s TIME_WAIT ended early. The peer had already "
                    "closed when TIME_WAIT ACKed its retransmitted FIN, answered that ACK with a RST, and "
                    "the RST ended TIME_WAIT (RFC 1337 calls it TIME_WAIT assassination).")
    for check in exchange_checks(exchange):
        about_time_wait = "TIME_WAIT on the active closer" in check.name or \
            (f"{exchange.active} follows the active close path" in check.name)
        if ended_by_rst and about_time_wait and not check.passed:
            session.check(check.name, True,
                          f"{check.detail}; TIME_WAIT reached, then ended by the peer's RST")
        else:
            session.check(check.name, check.passed, check.detail)


def watched(session: Session, stem: str, ports: list[int], work: Callable[[Observer], None],
            caption: str) -> None:
    """Run `work` while both sides are traced and both ends captured; draw the ladders after."""
    bpf = " or ".join(f"tcp port {port}" for port in ports)
    with watching(session, ports) as observer, capturing_both(session, stem, bpf) as pcaps:
        work(observer)
    draw_ladders(session, pcaps[0].path, observer, stem, echo=False, caption=caption)


def active_and_passive(session: Session) -> None:
    def work(observer: Observer) -> None:
        scenario = scenarios(session, observer)
        for exchange in (scenario.kernel_client_closes_first, scenario.stack_server_closes_first,
                         scenario.kernel_server_closes_first):
            run_exchange(session, observer, exchange)
        ours = range(first_port(session), first_port(session) + 4)
        rows = [r for r in kernel_rows(session) if r.state == "TIME_WAIT"
                and (r.local_port in ours or r.remote_port in ours)]
        for row in rows:
            session.say(f"Linux sock_diag: {kernel_row_text(row)}")
        timers = [row.timer_ms / 1000 for row in rows]
        session.metric("kernel_time_wait_seconds_left", timers)
        session.check(f"Linux: TIME_WAIT lasts {TIME_WAIT_SECONDS} s (TCP_TIMEWAIT_LEN)",
                      bool(timers) and all(TIME_WAIT_SECONDS - 15 < t <= TIME_WAIT_SECONDS for t in timers),
                      "time left on the kernel's TIME_WAIT sockets: "
                      f"{', '.join(f'{t:.1f} s' for t in timers) or 'none found'}")
        session.say("Only the active closer keeps a TIME_WAIT: the passive closer's socket is gone as soon "
                    "as its FIN is ACKed.")
        stack_tcp = observer.stack.config().get("tcp", {})
        namespace = session.lab.node(session.lab.first("kernel")).namespace
        rfc1337 = read_sysctl(namespace, "net.ipv4.tcp_rfc1337")
        session.metric("time_wait", {"kernel_seconds": TIME_WAIT_SECONDS, "kernel_left": timers,
                                     "stack_seconds": stack_tcp.get("time_wait"),
                                     "kernel_rfc1337": rfc1337, "stack_rfc1337": stack_tcp.get("rfc1337")})
        session.say(f"The stack's TIME_WAIT lasts {stack_tcp.get('time_wait')} s (its TcpConfig.time_wait), "
                    f"Linux's {TIME_WAIT_SECONDS} s; a RST ends it early on both unless RFC 1337's "
                    "protection "
                    f"is on (Linux net.ipv4.tcp_rfc1337 = {rfc1337}, the stack's rfc1337 = "
                    f"{stack_tcp.get('rfc1337')}).")
        session.check("the stack's TIME_WAIT lasts as long as Linux's",
                      stack_tcp.get("time_wait") == TIME_WAIT_SECONDS,
                      f"stack {stack_tcp.get('time_wait')} s, Linux {TIME_WAIT_SECONDS} s")

    watched(session, "close", [first_port(session) + i for i in range(4)], work,
            "orderly closes between Linux and the stack, captured on h1")


def half_close(session: Session) -> None:
    lab = session.lab
    namespace = lab.node(lab.first("kernel")).namespace

    def work(observer: Observer) -> None:
        run_exchange(session, observer, scenarios(session, observer).stack_client_closes_first)
        stack_ip = lab.address(lab.first("pystack"))
        # app "none" accepts and holds: it never reads and never closes
        observer.stack.listen(fin_wait_port(session), app="none")
        client = lab.kernel_socket(lab.first("kernel"))
        try:
            client.settimeout(5.0)
            client.connect((stack_ip, fin_wait_port(session)))
            client.shutdown(socket.SHUT_WR)
            mine = client.getsockname()
            kernel_state, stack_state = wait_for_states(session, observer, mine[1])
            session.say(f"Linux shut down its sending side to a stack that keeps its own half open: Linux "
                        f"{kernel_state}, stack {stack_state}.")
            fin_timeout = read_sysctl(namespace, "net.ipv4.tcp_fin_timeout")
            session.metric("tcp_fin_timeout", fin_timeout)
            session.say(f"FIN_WAIT2 lasts while the peer's half is open; Linux bounds it only for a socket "
                        f"the application has closed (net.ipv4.tcp_fin_timeout = {fin_timeout} s).")
            session.check("half-closed Linux waits in FIN_WAIT2, the stack in CLOSE_WAIT",
                          (kernel_state, stack_state) == ("FIN_WAIT2", "CLOSE_WAIT"),
                          f"kernel {kernel_state}, stack {stack_state}")
        finally:
            observer.stack.close_listener(fin_wait_port(session))  # the held connection ends with a RST
            client.close()

    watched(session, "halfclose", [first_port(session) + 2, fin_wait_port(session)], work,
            "half-close: data keeps flowing to the side that sent FIN; FIN_WAIT2 until the peer closes")


def wait_for_states(session: Session, observer: Observer, kernel_port: int) -> tuple[str, str]:
    """(kernel state, stack state) of the FIN_WAIT connection once they settle (within 3 s)."""
    kernel_ip = session.lab.address(session.lab.first("kernel"))
    deadline = time.monotonic() + 3.0
    kernel_state = stack_state = "gone"
    while time.monotonic() < deadline:
        rows = [r for r in kernel_rows(session, fin_wait_port(session)) if r.local_port == kernel_port]
        kernel_state = rows[0].state if rows else "gone"
        row: dict[str, Any] | None = find_connection(stack_connections(observer.stack),
                                                     remote=(kernel_ip, kernel_port))
        stack_state = str(row.get("state")) if row else "gone"
        if (kernel_state, stack_state) == ("FIN_WAIT2", "CLOSE_WAIT"):
            break
        time.sleep(0.05)
    return kernel_state, stack_state


def reset_on_unread(session: Session) -> None:
    def work(observer: Observer) -> None:
        scenario = scenarios(session, observer)
        for step in (scenario.kernel_resets_on_unread_data, scenario.stack_resets_on_unread_data):
            exchange = run_exchange(session, observer, step)
            session.say(f"{exchange.name}: {exchange.figures.get('unread_bytes', 0)} B unread; kernel reset "
                        f"events {exchange.kernel_resets or 'none'}, stack {exchange.stack_resets or 'none'}")

    watched(session, "reset", [first_port(session) + 4, first_port(session) + 5], work,
            "close() with unread data: a RST, not a FIN")


STEPS = [
    Step("active and passive close; TIME_WAIT on the active closer only", active_and_passive),
    Step("half-close: shutdown(SHUT_WR) and FIN_WAIT2", half_close),
    Step("RST on close with unread data", reset_on_unread),
]

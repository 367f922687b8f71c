"""Tutorial 4: accept() returns a new socket; closing the listener keeps or resets connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from lab.experiments.stack_answers import endpoint
from lab.tutorials import Session, Step
from lab.tutorials.observe import (
    Observer,
    capturing_both,
    draw_ladders,
    kernel_row_text,
    kernel_rows,
    stack_rows,
    stack_tables,
    watching,
)

KERNEL_SERVER, STACK_SERVER = 7400, 7401  # accept, then close the listener
KERNEL_QUEUE, STACK_QUEUE = 7402, 7403  # never accept, then close the listener
QUEUED = 3  # connections left in the accept queue
PORTS = [KERNEL_SERVER, STACK_SERVER, KERNEL_QUEUE, STACK_QUEUE]
MESSAGE = b"the accepted socket still works after the listener closed\n"


def addresses(session: Session) -> tuple[str, str]:
    lab = session.lab
    return lab.address(lab.first("kernel")), lab.address(lab.first("pystack"))


def four_tuple(local: tuple[str, int], remote: tuple[str, int]) -> str:
    return f"{local[0]}:{local[1]} <-> {remote[0]}:{remote[1]}"


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `work` on a thread (a stack client's blocking control request); its answer lands in the dict."""
    answer: dict[str, Any] = {}

    def run() -> None:
        answer["value"] = work()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answer


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stack_client(session: Session, port: int, **connect: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """The stack connects to Linux's `port` (its own control connection, on a thread of its own)."""
    lab = session.lab
    kernel_ip, _ = addresses(session)

    def work() -> dict[str, Any]:
        with lab.stack(lab.first("pystack"), timeout=30.0) as client:
            return client.connect(kernel_ip, port, timeout=10.0, **connect)

    return in_background(work)


def linux_listener(session: Session) -> None:
    lab = session.lab
    kernel_ip, _ = addresses(session)
    listener = lab.kernel_socket(lab.first("kernel"))
    listener.bind((kernel_ip, KERNEL_SERVER))
    listener.listen(8)
    listener.settimeout(10.0)
    thread, answer = stack_client(session, KERNEL_SERVER, send=5, recv="eof")
    conn, peer = listener.accept()
    try:
        session.say(f"Linux listener: fd {listener.fileno()}, 4-tuple "
                    f"{four_tuple(listener.getsockname(), ('0.0.0.0', 0))} (no peer: getpeername() fails)")
        session.say(f"accept() returned fd {conn.fileno()}, 4-tuple {four_tuple(conn.getsockname(), peer)}")
        rows = kernel_rows(session, KERNEL_SERVER)
        for row in rows:
            session.say(f"Linux sock_diag: {kernel_row_text(row)}")
        listening = [r for r in rows if r.state == "LISTEN"]
        accepted = [r for r in rows if r.state == "ESTABLISHED" and r.local_port == KERNEL_SERVER]
        tuples = {(r.local_ip, r.local_port, r.remote_ip, r.remote_port) for r in listening + accepted}
        session.metric("kernel_listener", four_tuple(listener.getsockname(), ("0.0.0.0", 0)))
        session.metric("kernel_accepted", four_tuple(conn.getsockname(), peer))
        session.check("Linux: the accepted socket's 4-tuple differs from the listener's",
                      len(listening) == 1 and len(accepted) == 1 and len(tuples) == 2,
                      f"listener {four_tuple(listener.getsockname(), ('0.0.0.0', 0))}, accepted "
                      f"{four_tuple(conn.getsockname(), peer)}")
        session.check("Linux: accept() returns another file descriptor", conn.fileno() != listener.fileno(),
                      f"listener fd {listener.fileno()}, accepted fd {conn.fileno()}")
        listener.close()
        gone = not [r for r in kernel_rows(session, KERNEL_SERVER) if r.state == "LISTEN"]
        got = conn.recv(5)
        conn.sendall(MESSAGE)
    finally:
        conn.close()
        listener.close()
    thread.join(15.0)
    stack_answer = answer.get("value", {})
    session.say(f"After close(listener): a LISTEN row left? {'no' if gone else 'yes'}. The accepted socket "
                f"read {len(got)} B from the stack and sent it {len(MESSAGE)} B; the stack received "
                f"{stack_answer.get('received', 0)} B.")
    session.check("Linux: closing the listener keeps the accepted connection",
                  gone and len(got) == 5 and stack_answer.get("received") == len(MESSAGE),
                  f"listener gone: {gone}; after it, {len(got)} B in, "
                  f"{stack_answer.get('received', 0)} B out")


def stack_listener(session: Session) -> None:
    lab = session.lab
    _, stack_ip = addresses(session)
    with lab.stack(lab.first("pystack")) as stack:
        stack.listen(STACK_SERVER, app="echo")
        with lab.kernel_socket(lab.first("kernel")) as client:
            client.settimeout(10.0)
            client.connect((stack_ip, STACK_SERVER))
            client.sendall(b"hi\n")
            client.recv(16)  # the echo: the connection has been accepted by the stack's app
            mine = client.getsockname()
            tables = stack.tables()
            listening = stack_rows(tables, "listening", STACK_SERVER)
            accepted = [row for row in stack_rows(tables, "established", STACK_SERVER)
                        if row.get("remote") == f"{mine[0]}:{mine[1]}" or row.get("remote_port") == mine[1]]
            for row in listening:
                session.say(f"stack listening table: {row['local']} <-> 0.0.0.0:0 (backlog {row['backlog']})")
            for row in accepted:
                session.say(f"stack established table: {row.get('local')} <-> {row.get('remote')} "
                            f"{row.get('state')}")
            session.check("stack: the accepted connection's 4-tuple differs from the listener's",
                          len(listening) == 1 and len(accepted) == 1 and
                          accepted[0].get("remote") != "0.0.0.0:0",
                          f"listening {[r['local'] for r in listening]}, accepted "
                          f"{[(r.get('local'), r.get('remote')) for r in accepted]}")
            stack.close_listener(STACK_SERVER)
            gone = not stack_rows(stack.tables(), "listening", STACK_SERVER)
            client.sendall(MESSAGE)
            echoed = b""
            while len(echoed) < len(MESSAGE):
                chunk = client.recv(4096)
                if not chunk:
                    break
                echoed += chunk
    session.say(f"After the stack closed its listener: listening row left? {'no' if gone else 'yes'}; "
                f"the connection echoed {len(echoed)} of {len(MESSAGE)} B.")
    session.check("stack: closing the listener keeps the accepted connection", gone and echoed == MESSAGE,
                  f"listener gone: {gone}; echoed {len(echoed)}/{len(MESSAGE)} B after it")


def linux_unaccepted(session: Session, observer: Observer) -> dict[str, Any]:
    lab = session.lab
    kernel_ip, _ = addresses(session)
    listener = lab.kernel_socket(lab.first("kernel"))
    listener.bind((kernel_ip, KERNEL_QUEUE))
    listener.listen(8)
    clients = [stack_client(session, KERNEL_QUEUE, recv="eof") for _ in range(QUEUED)]

    def accept_queue() -> int:
        rows = [r for r in kernel_rows(session, KERNEL_QUEUE) if r.state == "LISTEN"]
        return rows[0].recv_queue if rows else 0

    wait_until(lambda: accept_queue() >= QUEUED)
    queued = accept_queue()
    session.say(f"Linux listener on {KERNEL_QUEUE} never calls accept(): its accept queue holds {queued} "
                f"connections (Recv-Q of the LISTEN row). Now close(listener).")
    listener.close()
    for thread, _ in clients:
        thread.join(15.0)
    errors = [answer.get("value", {}).get("error") for _, answer in clients]
    ends = [endpoint(answer.get("value", {}), "local") for _, answer in clients]
    return {"queued": queued, "client_errors": errors,
            "connections": [((kernel_ip, KERNEL_QUEUE), end) for end in ends]}


def stack_unaccepted(session: Session, observer: Observer) -> dict[str, Any]:
    lab = session.lab
    _, stack_ip = addresses(session)
    errors: list[str] = []
    connections: list[tuple[tuple[str, int], tuple[str, int]]] = []
    with lab.stack(lab.first("pystack")) as stack:
        stack.listen(STACK_QUEUE, app="none", accept=False, backlog=8)
        clients = []
        for _ in range(QUEUED):
            client = lab.kernel_socket(lab.first("kernel"))
            client.settimeout(5.0)
            client.connect((stack_ip, STACK_QUEUE))  # done when the stack's SYN-ACK came: queued there
            clients.append(client)
            connections.append(((stack_ip, STACK_QUEUE), client.getsockname()))

        def accept_queue() -> int:
            rows = stack_rows(stack_tables(session), "listening", STACK_QUEUE)
            return int(rows[0]["accept_queue"]) if rows else 0

        wait_until(lambda: accept_queue() >= QUEUED)
        queued = accept_queue()
        session.say(f"stack listener on {STACK_QUEUE} never accepts: its accept queue holds {queued}. "
                    "Now close it.")
        stack.close_listener(STACK_QUEUE)
        for client in clients:
            try:
                errors.append("EOF" if not client.recv(1) else "data")
            except ConnectionResetError:
                errors.append("ECONNRESET")
            except TimeoutError:
                errors.append("no answer")
            finally:
                client.close()
    return {"queued": queued, "client_errors": errors, "connections": connections}


def unaccepted_reset(session: Session) -> None:
    with watching(session, PORTS) as observer, \
            capturing_both(session, "accept", " or ".join(f"tcp port {p}" for p in PORTS)) as pcaps:
        kernel = linux_unaccepted(session, observer)
        stack = stack_unaccepted(session, observer)
        time.sleep(0.3)  # the last RSTs reach both traces
        queued = {"Linux": kernel.pop("connections"), "stack": stack.pop("connections")}
        kernel_resets = observer.kernel_resets(queued["Linux"] + queued["stack"])
        stack_resets = observer.stack_resets()
        for listener, connections in queued.items():
            for index, (server, client) in enumerate(connections, start=1):
                kernel_end, stack_end = (server, client) if listener == "Linux" else (client, server)
                observer.record(f"queued on the {listener} listener, #{index}",
                                kernel=(kernel_end, stack_end), stack=(stack_end, kernel_end))
    session.metric("unaccepted", {"linux_listener": kernel, "stack_listener": stack,
                                  "kernel_resets": kernel_resets, "stack_resets": stack_resets})
    session.say(f"Linux closed a listener holding {kernel['queued']}: the stack clients saw "
                f"{', '.join(str(e) for e in kernel['client_errors'])}.")
    session.say(f"The stack closed a listener holding {stack['queued']}: the Linux clients saw "
                f"{', '.join(stack['client_errors'])}.")
    session.say(f"RSTs counted by the kernel's tracepoints: sent {kernel_resets['tcp_send_reset']}, received "
                f"{kernel_resets['tcp_receive_reset']}; by the stack's trace: sent "
                f"{stack_resets['tcp_send_reset']}, received {stack_resets['tcp_receive_reset']}.")
    session.check("Linux: closing a listener resets each connection left in its accept queue",
                  kernel["queued"] == QUEUED and kernel["client_errors"] == ["ECONNRESET"] * QUEUED,
                  f"{kernel['queued']} queued; stack clients: {kernel['client_errors']}")
    session.check("stack: closing a listener resets each connection left in its accept queue",
                  stack["queued"] == QUEUED and stack["client_errors"] == ["ECONNRESET"] * QUEUED,
                  f"{stack['queued']} queued; Linux clients: {stack['client_errors']}")
    traced = observer.kernel_trace is not None
    session.check("both traces count one RST per queued connection, each way",
                  stack_resets["tcp_receive_reset"] >= QUEUED and stack_resets["tcp_send_reset"] >= QUEUED
                  and (not traced or (kernel_resets["tcp_send_reset"] >= QUEUED
                                      and kernel_resets["tcp_receive_reset"] >= QUEUED)),
                  f"kernel sent {kernel_resets['tcp_send_reset']} "
                  f"received {kernel_resets['tcp_receive_reset']}; "
                  f"stack sent {stack_resets['tcp_send_reset']} received {stack_resets['tcp_receive_reset']}"
                  + ("" if traced else " (kernel not traced)"))
    draw_ladders(session, pcaps[0].path, observer, "accept", echo=False,
                 caption="connections closed by a listener that never accepted them, captured on h1")
    session.say("The ladders in the report show each queued connection: the handshake, then the RST.")


STEPS = [
    Step("Linux: the listener and the socket accept() returns", linux_listener),
    Step("the stack: its listening table and its established table", stack_listener),
    Step("closing a listener with connections nobody accepted", unaccepted_reset),
]

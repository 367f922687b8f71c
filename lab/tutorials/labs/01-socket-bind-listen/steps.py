"""Tutorial 1: socket, bind, listen on Linux (h1) and on the stack (s1), and the tables they fill."""

from __future__ import annotations

import errno
import socket
import threading
from typing import Any

from lab.build.control import StackCommandFailed
from lab.kernel.sysctls import read_sysctl
from lab.tutorials import Session, Step
from lab.tutorials.observe import (
    capturing_both,
    draw_ladders,
    kernel_row_text,
    kernel_rows,
    stack_rows,
    stack_tables,
    watching,
)
from stack import SO_REUSEADDR, SOL_SOCKET
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner

BOUND_PORT = 7001  # kernel: bound, never listening
SMALL, HUGE = 7002, 7003  # kernel listeners: backlog 5 and 100000
STACK_SMALL, STACK_HUGE = 7010, 7011  # stack listeners: backlog 5 and 60000
CONFLICT = 7004  # kernel: a listener and a second bind
KERNEL_REUSE, STACK_REUSE = 7020, 7021  # a port left in TIME_WAIT on each side
KERNEL_REUSE_OLD = 7022  # left in TIME_WAIT by a listener without SO_REUSEADDR
STACK_CODE_PORT = 7030  # the stack's socket API in this process


def kernel_address(session: Session) -> str:
    return session.lab.address(session.lab.first("kernel"))


def stack_address(session: Session) -> str:
    return session.lab.address(session.lab.first("pystack"))


def bind_error(sock: socket.socket, address: tuple[str, int]) -> str:
    """'ok' when bind() succeeds, else the errno's name (EADDRINUSE)."""
    try:
        sock.bind(address)
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error))
    return "ok"


def bind_alone(session: Session) -> None:
    with session.lab.kernel_socket(session.lab.first("kernel")) as kernel:
        before = kernel.getsockname()
        kernel.bind((kernel_address(session), BOUND_PORT))
        session.say(f"socket() on Linux: getsockname() is {before[0]}:{before[1]}, no address yet.")
        session.say(f"bind(('{kernel_address(session)}', {BOUND_PORT})): now it has one.")
        rows = kernel_rows(session, BOUND_PORT)
    for row in rows:
        session.say(f"Linux sock_diag (ss -tan): {kernel_row_text(row)}")
    session.check("Linux: a bound socket is in the bind table but not listening (state CLOSE)",
                  [r.state for r in rows] == ["CLOSE"], f"states on port {BOUND_PORT}: "
                  f"{', '.join(r.state for r in rows) or 'none'}")
    host = stack_host("10.0.0.2")
    own = host.socket()
    before = own.getsockname()
    own.bind(("10.0.0.2", BOUND_PORT))
    snapshot = host.tables()
    code_bound = [f"{entry.ip}:{entry.port} {entry.state}" for entry in snapshot.bound]
    session.say(f"The same on the stack's own socket API (a Host in this process): getsockname() "
                f"{before[0]}:{before[1]} before bind(), then its bound table holds {'; '.join(code_bound)} "
                f"and its listening table {len(snapshot.listening)} rows.")
    session.check("stack: a bound socket is in the bound table but not listening (state CLOSE)",
                  code_bound == [f"10.0.0.2:{BOUND_PORT} CLOSE"] and not snapshot.listening,
                  f"bound {'; '.join(code_bound)}; listening {len(snapshot.listening)}")
    own.close()
    tables = stack_tables(session)
    bound = [f"{row['local']} {row['state']}" for row in tables["bound"]]
    session.say(f"s1's stack process: its bound table holds every port a socket of it has (here its apps' "
                f"listeners): {'; '.join(bound)}")
    listening = {row["local"] for row in tables["listening"]}
    session.check("stack: every listening port is also in the bound table",
                  listening <= {row["local"] for row in tables["bound"]},
                  f"{len(listening)} listening, {len(tables['bound'])} bound")


def listen_backlog(session: Session) -> None:
    lab = session.lab
    namespace = lab.node(lab.first("kernel")).namespace
    somaxconn = int(read_sysctl(namespace, "net.core.somaxconn") or 4096)
    session.say(f"net.core.somaxconn in h1's namespace is {somaxconn}: "
                "listen() never keeps a larger backlog.")
    kept: list[socket.socket] = []
    sizes: dict[str, Any] = {}
    for port, backlog in ((SMALL, 5), (HUGE, 100000)):
        sock = lab.kernel_socket(lab.first("kernel"))
        kept.append(sock)
        sock.bind((kernel_address(session), port))
        sock.listen(backlog)
        row = next(r for r in kernel_rows(session, port) if r.state == "LISTEN")
        session.say(f"Linux listen({backlog}) on port {port}: {kernel_row_text(row)}  "
                    "(Send-Q is the backlog)")
        sizes[f"kernel_backlog_{backlog}"] = row.send_queue
    shown = lab.exec(lab.first("kernel"), ["ss", "-ltn"], timeout=10.0)
    if shown.returncode == 0:
        lines = shown.stdout.decode(errors="replace").splitlines()
        ours = [line for line in lines[1:] if f":{SMALL} " in line or f":{HUGE} " in line]
        session.say("`ss -ltn` in h1 reads the same sock_diag rows:\n" + "\n".join(lines[:1] + ours))
    with lab.stack(lab.first("pystack")) as stack:
        stack.listen(STACK_SMALL, app="echo", backlog=5)
        stack.listen(STACK_HUGE, app="echo", backlog=60000)
        tables = stack.tables()
        for port, backlog in ((STACK_SMALL, 5), (STACK_HUGE, 60000)):
            row = stack_rows(tables, "listening", port)[0]
            session.say(f"stack listen({backlog}) on port {port}: backlog {row['backlog']}, SYN queue "
                        f"{row['syn_queue']}, accept queue {row['accept_queue']}")
            sizes[f"stack_backlog_{backlog}"] = row["backlog"]
        stack.close_listener(STACK_SMALL)
        stack.close_listener(STACK_HUGE)
    for sock in kept:
        sock.close()
    session.metric("somaxconn", somaxconn)
    session.metric("backlogs", sizes)
    session.check("Linux keeps the backlog asked for when it is small", sizes["kernel_backlog_5"] == 5,
                  f"listen(5) -> {sizes['kernel_backlog_5']}")
    session.check("Linux caps the backlog at net.core.somaxconn", sizes["kernel_backlog_100000"] == somaxconn,
                  f"listen(100000) -> {sizes['kernel_backlog_100000']}, somaxconn {somaxconn}")
    session.check("the stack keeps a small backlog and caps a big one the same way",
                  sizes["stack_backlog_5"] == 5 and sizes["stack_backlog_60000"] == somaxconn,
                  f"listen(5) -> {sizes['stack_backlog_5']}, listen(60000) -> {sizes['stack_backlog_60000']}")


def address_in_use(session: Session) -> None:
    lab = session.lab
    address = (kernel_address(session), CONFLICT)
    first = lab.kernel_socket(lab.first("kernel"))
    second = lab.kernel_socket(lab.first("kernel"))
    third = lab.kernel_socket(lab.first("kernel"))
    try:
        for sock in (first, third):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        first.bind(address)
        first.listen(16)
        plain = bind_error(second, address)
        reused = bind_error(third, address)
    finally:
        for sock in (first, second, third):
            sock.close()
    session.say(f"Linux: a listener holds {address[0]}:{CONFLICT}; a second bind() gets {plain}, and "
                f"with SO_REUSEADDR on both it still gets {reused}: two listeners never share a port.")
    with lab.stack(lab.first("pystack")) as stack:
        answer: dict[str, Any] = {}
        try:
            stack.listen(80, app="echo")
        except StackCommandFailed as failure:  # the refusal is what this step shows
            answer = {"errno": failure.errno_name, "error": failure.error}
    session.say(f"stack: listen on port 80, where its http app listens: {answer.get('error', 'accepted!')} "
                f"({answer.get('errno')})")
    session.check("Linux: bind() on a port a listener holds fails with EADDRINUSE", plain == "EADDRINUSE",
                  plain)
    session.check("Linux: SO_REUSEADDR does not let a second socket bind a listening port",
                  reused == "EADDRINUSE", reused)
    session.check("stack: a second listener on a port fails with EADDRINUSE",
                  answer.get("errno") == "EADDRINUSE",
                  str(answer.get("errno")))


def linux_server_closes_first(session: Session, port: int, *, reuse: bool) -> tuple[str, int]:
    """A Linux listener on `port` (SO_REUSEADDR as `reuse` says) serves one stack client and closes its
    side first, so the connection stays in TIME_WAIT on Linux's port; returns the client's end."""
    lab = session.lab
    listener = lab.kernel_socket(lab.first("kernel"))
    answers: dict[str, Any] = {}

    def stack_client() -> None:
        with lab.stack(lab.first("pystack")) as client:
            answers["connect"] = client.connect(kernel_address(session), port, recv="eof")

    try:
        if reuse:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((kernel_address(session), port))
        listener.listen(4)
        thread = threading.Thread(target=stack_client, daemon=True)
        thread.start()
        listener.settimeout(10.0)
        conn, peer = listener.accept()
        conn.sendall(b"hello from the kernel\n")
        conn.close()  # the server closes first: the active closer
        thread.join(15.0)
    finally:
        listener.close()
    return peer[0], peer[1]


def reuse_after_time_wait(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.first("kernel"), lab.first("pystack")
    verdicts: dict[str, str] = {}
    with watching(session, [KERNEL_REUSE, STACK_REUSE]) as observer, \
            capturing_both(session, "reuse", f"tcp port {KERNEL_REUSE} or tcp port {STACK_REUSE}") as pcaps:
        # Linux is the server and closes first: its side of the connection stays in TIME_WAIT. The old
        # socket says SO_REUSEADDR too: its TIME_WAIT remembers it (step 5 shows why that matters).
        peer = linux_server_closes_first(session, KERNEL_REUSE, reuse=True)
        session.say(f"Linux served {peer[0]}:{peer[1]} and closed first; its sockets on port {KERNEL_REUSE}:")
        for row in kernel_rows(session, KERNEL_REUSE):
            session.say(f"  {kernel_row_text(row)}")
        for reuse in (False, True):
            sock = lab.kernel_socket(kernel)
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            verdicts["kernel_with" if reuse else "kernel_without"] = bind_error(
                sock, (kernel_address(session), KERNEL_REUSE))
            sock.close()
        session.say(f"Linux bind() of port {KERNEL_REUSE} again: without SO_REUSEADDR "
                    f"{verdicts['kernel_without']}, with it {verdicts['kernel_with']}.")
        # The stack is the server and closes first (its `source` app sends 1000 bytes and closes).
        with lab.stack(stack_node) as stack:
            stack.listen(STACK_REUSE, app="source", bytes=1000)
            with lab.kernel_socket(kernel) as client:
                client.settimeout(10.0)
                client.connect((stack_address(session), STACK_REUSE))
                kernel_client = client.getsockname()
                received = b""
                while chunk := client.recv(4096):
                    received += chunk
            stack.close_listener(STACK_REUSE)
            left = [f"{row['local']} {row['state']}"
                    for row in stack_rows(stack.tables(), "bound", STACK_REUSE)]
            session.say(f"the stack sent {len(received)} B and closed first; its bound table on port "
                        f"{STACK_REUSE}: {'; '.join(left) or 'empty'}")
            try:
                stack.listen(STACK_REUSE, app="echo")
                verdicts["stack_relisten"] = "ok"
                stack.close_listener(STACK_REUSE)
            except StackCommandFailed as failure:  # a refusal is a measured result here
                verdicts["stack_relisten"] = failure.errno_name or failure.error
        session.say(f"stack listen() on port {STACK_REUSE} again (it sets SO_REUSEADDR, like every server): "
                    f"{verdicts['stack_relisten']}")
        kernel_end, stack_end = (kernel_address(session), KERNEL_REUSE), (peer[0], peer[1])
        observer.record(f"stack client -> Linux server :{KERNEL_REUSE}", kernel=(kernel_end, stack_end),
                        stack=(stack_end, kernel_end))
        kernel_end, stack_end = (kernel_client[0], kernel_client[1]), (stack_address(session), STACK_REUSE)
        observer.record(f"Linux client -> stack server :{STACK_REUSE}", kernel=(kernel_end, stack_end),
                        stack=(stack_end, kernel_end))
    session.metric("reuse", verdicts)
    time_wait = [r for r in kernel_rows(session, KERNEL_REUSE) if r.state == "TIME_WAIT"]
    session.check("Linux: the server that closed first holds its port in TIME_WAIT", bool(time_wait),
                  ", ".join(kernel_row_text(r) for r in time_wait) or "no TIME_WAIT row")
    session.check("Linux: bind() of a port in TIME_WAIT fails without SO_REUSEADDR",
                  verdicts["kernel_without"] == "EADDRINUSE", verdicts["kernel_without"])
    session.check("Linux: with SO_REUSEADDR the same bind() succeeds", verdicts["kernel_with"] == "ok",
                  verdicts["kernel_with"])
    session.check("stack: a server listens again on a port its closed connection holds in TIME_WAIT",
                  verdicts["stack_relisten"] == "ok" and any("TIME_WAIT" in row for row in left),
                  f"bound {'; '.join(left) or 'empty'}; listen again: {verdicts['stack_relisten']}")
    draw_ladders(session, pcaps[0].path, observer, "reuse",
                 caption="the connections that left TIME_WAIT behind, captured on h1")


def stack_host(address: str) -> Host:
    """A Host of the stack in this process, alone on a virtual clock: its socket API and its tables,
    without a lab (what the node process on s1 runs, with nothing attached)."""
    host = Host(f"{address}/24", "02:00:00:00:00:02", seed=2, secret=b"b" * 32)
    peer = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, secret=b"a" * 32)
    Runner([host, peer], [MemoryWire(host, peer)])  # the sockets' driver
    return host


def stack_code_trial(reuse_old: bool, reuse_new: bool) -> tuple[str, list[str]]:
    """The same exchange on the stack's own socket API: two Hosts in this process on a virtual clock
    (no lab needed), the server closing first. What bind() of its port then says, and its bound table."""
    client_host = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, secret=b"a" * 32)
    server_host = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, secret=b"b" * 32)
    runner = Runner([client_host, server_host], [MemoryWire(client_host, server_host)])  # drives both
    address = ("10.0.0.2", STACK_CODE_PORT)
    listener = server_host.socket()
    if reuse_old:
        listener.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(4)
    client = client_host.socket()
    client.connect(address)
    conn, _ = listener.accept()
    conn.sendall(b"hi")
    conn.close()  # the server closes first: TIME_WAIT on its port
    while client.recv(16):
        pass
    client.close()
    listener.close()
    runner.run_for(0.2)  # the client's FIN and the last ACK cross: the server's side is in TIME_WAIT
    bound = [f"{entry.ip}:{entry.port} {entry.state}" for entry in server_host.tables().bound]
    again = server_host.socket()
    if reuse_new:
        again.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    try:
        again.bind(address)
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error)), bound
    finally:
        again.close()
    return "ok", bound


def reuse_on_both(session: Session) -> None:
    lab = session.lab
    with capturing_both(session, "reuse-both", f"tcp port {KERNEL_REUSE_OLD}"):
        linux_server_closes_first(session, KERNEL_REUSE_OLD, reuse=False)
    sock = lab.kernel_socket(lab.first("kernel"))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    linux = bind_error(sock, (kernel_address(session), KERNEL_REUSE_OLD))
    sock.close()
    session.say(f"Linux: the old listener on {KERNEL_REUSE_OLD} did not set SO_REUSEADDR. Its connection's "
                f"TIME_WAIT remembers that, and a new socket with SO_REUSEADDR still gets {linux} "
                "(inet_bind_conflict wants it on both).")
    trials = {}
    for reuse_old, reuse_new in ((False, False), (False, True), (True, True)):
        verdict, bound = stack_code_trial(reuse_old, reuse_new)
        case = f"old {'with' if reuse_old else 'without'}, new {'with' if reuse_new else 'without'}"
        trials[case] = verdict
    session.say("The stack's own socket API, on two Hosts in this process (a virtual clock, no lab): its "
                f"bound table after the close holds {'; '.join(bound)}; bind() again: "
                + "; ".join(f"{case}: {verdict}" for case, verdict in trials.items()))
    linux_rule = {"old without, new without": "EADDRINUSE", "old without, new with": "EADDRINUSE",
                  "old with, new with": "ok"}
    session.metric("reuse_on_both", {"linux_old_without_new_with": linux, "stack_code": trials})
    session.check("Linux: SO_REUSEADDR on the new socket alone does not get past a TIME_WAIT",
                  linux == "EADDRINUSE", linux)
    session.check("the stack's bind table follows Linux's rule: SO_REUSEADDR on both sockets",
                  trials == linux_rule and any("TIME_WAIT" in entry for entry in bound),
                  "; ".join(f"{case}: {verdict}" for case, verdict in trials.items()))


STEPS = [
    Step("bind alone: an address, no listening", bind_alone),
    Step("listen(backlog): what the number sizes, and the somaxconn cap", listen_backlog),
    Step("EADDRINUSE: two sockets, one port", address_in_use),
    Step("SO_REUSEADDR: binding a port that TIME_WAIT still holds", reuse_after_time_wait),
    Step("SO_REUSEADDR must be on both sockets, in Linux and in the stack's code", reuse_on_both),
]

"""Lab 2, the two queues under pressure: a listener that never accepts, on the stack and on Linux.

Each side gets the same treatment, with backlog 2:
- one client that never completes its handshake (its SYN comes from an address whose answers
  vanish), so the SYN queue holds an entry and its SYN-ACK is retransmitted;
- five ordinary clients, 0.1 s apart: the first backlog + 1 complete and wait in the accept queue,
  the others' SYNs are dropped (ListenOverflows) and they time out after one SYN retransmission;
- a flood of half-open SYNs on a second listener: past the SYN queue's limit the answers are SYN
  cookies, and an ordinary client still gets in.
The queues are sampled every 50 ms while it happens (stack: `tables`; Linux: sock_diag, where the
listener's Recv-Q is the accept queue and each NEW_SYN_RECV request socket one SYN queue entry).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from lab.build.control import StackClient
from lab.build.state import LabError
from lab.experiments.backlog import connect_outcome, stack_listener_row, wait_for_connects
from lab.experiments.stack_answers import counter_value, read_trace, trace_cursor
from lab.kernel.rawsyn import interface_mac, send_syns
from lab.kernel.silent import silent_address, silent_neighbour
from lab.kernel.sockdiag import kernel_tcp_sockets
from lab.kernel.sockets import counter_deltas, kernel_netstat, listening_socket
from lab.kernel.sysctls import read_sysctl
from lab.kernel.tracepoints import optional_kernel_trace, traceable_port
from lab.tools.capture import capturing
from lab.tutorials import Session, Step
from lab.tutorials.plots import QueueSample, publish, queue_plot
from stack.tcp.config import TcpConfig

BACKLOG = 2
CLIENTS = 5
STACK_PORT, STACK_COOKIE_PORT, KERNEL_COOKIE_PORT = 5300, 5302, 5303
HALF_OPEN_PORT = 40001  # the raw half-open client's source port toward the kernel listener
FLOOD = 6  # half-open SYNs sent to each cookie listener
WATCH_SECONDS = 0.05
CLIENT_GAP = 0.1
CLIENTS_START = 0.3  # seconds after the half-open client: its entry is in the SYN queue by then
LOOK_UNTIL = 3.4  # SYN-ACKs to the half-open client leave at about 0, 1 and 3 s
TCP_SYNCNT = getattr(socket, "TCP_SYNCNT", 7)
KERNEL_COUNTERS = ("TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPReqQFullDoCookies",
                   "TcpExtTCPReqQFullDrop", "TcpExtSyncookiesSent", "TcpExtSyncookiesRecv")
STACK_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent", "SyncookiesRecv")


class QueueWatcher(threading.Thread):
    """Looks at one listener's two queues every 50 ms until stopped; `look()` gives (SYN, accept)."""

    def __init__(self, look: Callable[[], tuple[int, int]], started: float) -> None:
        super().__init__(daemon=True)
        self.look = look
        self.started = started
        self.samples: list[QueueSample] = []
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                syn_queue, accept_queue = self.look()
            except (OSError, LabError, ValueError) as error:  # the step says what stopped the looking
                self.error = f"{type(error).__name__}: {error}"
                return
            moment = round(time.monotonic() - self.started, 3)
            self.samples.append(QueueSample(moment, syn_queue, accept_queue))
            self._stop_event.wait(WATCH_SECONDS)

    def finish(self) -> list[QueueSample]:
        self._stop_event.set()
        if self.ident is not None:  # started
            self.join(2.0)
        return self.samples


def stack_queues(control: StackClient, port: int) -> Callable[[], tuple[int, int]]:
    def look() -> tuple[int, int]:
        row = stack_listener_row(control.tables(), port)
        return int(row.get("syn_queue", 0)), int(row.get("accept_queue", 0))
    return look


def kernel_queues(namespace: str, port: int) -> Callable[[], tuple[int, int]]:
    """A Linux listener's queues from sock_diag: Recv-Q of the LISTEN row, and its request sockets."""
    def look() -> tuple[int, int]:
        rows = [r for r in kernel_tcp_sockets(namespace) if r.local_port == port]
        accept = sum(r.recv_queue for r in rows if r.state == "LISTEN")
        return sum(1 for r in rows if r.state in ("NEW_SYN_RECV", "SYN_RECV")), accept
    return look


def quiet_address(session: Session, index: int) -> str:
    """An address of the lab's subnet no node has (from the top), for clients whose answers vanish."""
    lab = session.lab
    used = {str(i.address.ip) for n in lab.plan.nodes for i in n.interfaces}
    interface: IPv4Interface = lab.node(lab.first("kernel")).interfaces[0].address
    free = [str(a) for a in reversed(list(interface.network.hosts())) if str(a) not in used]
    return free[index]


def wire_end(session: Session) -> str:
    """s1's veth end: the wire itself, raw SYNs included (its TAP carries only the stack's own frames)."""
    return session.lab.node(session.lab.first("pystack")).interfaces[0].name


def capture_paths(session: Session, part: str) -> list[Path]:
    """Where this part's two captures go (h1's interface, then s1's end of the wire), listed as pcaps."""
    paths = [session.path(f"{part}-h1.pcap"), session.path(f"{part}-s1.pcap")]
    for path in paths:
        session.artifact("pcap", path)
    return paths


def samples_json(samples: list[QueueSample]) -> list[list[float]]:
    return [[s.time, s.syn_queue, s.accept_queue] for s in samples]


def stack_counters(control: StackClient) -> dict[str, int]:
    stats = control.stats()
    return {name: counter_value(stats, name) for name in STACK_COUNTERS}


def judge_queues(session: Session, side: str, samples: list[QueueSample], outcomes: list[str]) -> None:
    most_syn = max((s.syn_queue for s in samples), default=0)
    most_accept = max((s.accept_queue for s in samples), default=0)
    admitted = min(CLIENTS, BACKLOG + 1)
    session.check(f"{side}: the SYN queue was seen non-empty", most_syn > 0,
                  f"largest SYN queue {most_syn} in {len(samples)} looks, 50 ms apart")
    session.check(f"{side}: the accept queue stopped at backlog + 1", most_accept == admitted,
                  f"backlog {BACKLOG}, {CLIENTS} clients, largest accept queue {most_accept} "
                  f"(Linux admits backlog + 1 = {admitted})")
    counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    session.check(f"{side}: clients beyond the queue time out, never refused",
                  counts.get("connected", 0) == admitted and counts.get("ECONNREFUSED", 0) == 0,
                  f"client outcomes {counts}")


# ---------------------------------------------------------------------------------------------------
# Step 1: the stack listens, kernel clients knock
# ---------------------------------------------------------------------------------------------------

def stack_listener(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    plan = lab.node(kernel)
    address, quiet = lab.address(stack_node), quiet_address(session, 0)
    session.say(f"The stack (s1, {address}) listens on port {STACK_PORT} with backlog {BACKLOG} and never "
                "calls accept(). The kernel node h1 is the client side.")
    pcaps = capture_paths(session, "stack-listener")
    with lab.stack(stack_node) as control, lab.stack(stack_node) as watching, \
            capturing(lab, kernel, pcaps[0], bpf_filter=f"tcp port {STACK_PORT}"), \
            capturing(lab, stack_node, pcaps[1], wire_end(session), bpf_filter=f"tcp port {STACK_PORT}"):
        control.ping(lab.address(kernel), count=1, timeout=1.0)  # ARP settled before the clients come
        before = stack_counters(control)
        cursor = trace_cursor(control)
        control.listen(STACK_PORT, app="none", backlog=BACKLOG, accept=False)
        clients: list[socket.socket] = []
        started = time.monotonic()
        watcher = QueueWatcher(stack_queues(watching, STACK_PORT), started)
        try:
            with silent_address(plan.namespace, plan.interfaces[0].name, quiet):
                watcher.start()
                half_open = lab.kernel_socket(kernel)
                clients.append(half_open)
                half_open.bind((quiet, 0))
                half_open.setblocking(False)
                half_open.connect_ex((address, STACK_PORT))
                session.say(f"A client from {quiet}: h1 owns that address but drops every packet sent to "
                            "it, so the stack's SYN-ACK never arrives and the handshake stays half done.")
                time.sleep(CLIENTS_START)
                ordinary = []
                for _ in range(CLIENTS):
                    client = lab.kernel_socket(kernel)
                    client.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)  # one SYN retransmission
                    client.setblocking(False)
                    client.connect_ex((address, STACK_PORT))
                    clients.append(client)
                    ordinary.append(client)
                    time.sleep(CLIENT_GAP)
                time.sleep(max(0.0, LOOK_UNTIL - (time.monotonic() - started)))
                kernel_rows = {r.local_port: r for r in kernel_tcp_sockets(plan.namespace)
                               if r.remote_port == STACK_PORT}
                half_state = kernel_rows.get(half_open.getsockname()[1])
                outcomes = wait_for_connects(ordinary, deadline=time.monotonic() + 2.0)
            samples = watcher.finish()
            events, _ = read_trace(control, cursor)
            after = stack_counters(control)
        finally:
            watcher.finish()
            for client in clients:
                client.close()
            control.close_listener(STACK_PORT)
    grew = counter_deltas(before, after, STACK_COUNTERS)
    synacks = [e for e in events if e.get("name") == "tcp_retransmit_synack"
               and str(e.get("remote", "")).startswith(f"{quiet}:")]
    most = max((s.syn_queue for s in samples), default=0)
    client_state = half_state.state if half_state else "no state"
    client_resent = half_state.retransmits if half_state else 0
    session.say(f"The stack's SYN queue held up to {most} entry; the half-open client on h1 sat in "
                f"{client_state} with {client_resent} SYN retransmission(s), while the stack resent its "
                f"SYN-ACK {len(synacks)} time(s): on its own timer, and again for each SYN the client "
                "resent.")
    session.say(f"Of {CLIENTS} ordinary clients: {outcomes}. The stack counted ListenOverflows "
                f"+{grew['ListenOverflows']}, ListenDrops +{grew['ListenDrops']}: a full accept queue drops "
                "the SYN, so the client retransmits it and finally gives up.")
    session.metric("stack_listener", {"samples": samples_json(samples), "outcomes": outcomes,
                                      "counters": grew, "synack_retransmissions": len(synacks),
                                      "watch_error": watcher.error})
    judge_queues(session, "stack listener", samples, outcomes)
    session.check("stack listener: the half-open client's SYN-ACK was retransmitted", len(synacks) >= 1,
                  f"{len(synacks)} tcp_retransmit_synack event(s) toward {quiet}")
    session.check("stack listener: dropped SYNs counted as ListenOverflows", grew["ListenOverflows"] >= 1,
                  f"ListenOverflows +{grew['ListenOverflows']}, ListenDrops +{grew['ListenDrops']}")


# ---------------------------------------------------------------------------------------------------
# Step 2: Linux listens, stack clients knock
# ---------------------------------------------------------------------------------------------------

def stack_clients(session: Session, address: str, port: int, count: int, hold: float
                  ) -> tuple[list[threading.Thread], list[dict[str, Any]]]:
    """`count` stack connects, `CLIENT_GAP` apart, each holding its connection `hold` seconds."""
    lab, stack_node = session.lab, session.lab.first("pystack")
    results: list[dict[str, Any]] = [{} for _ in range(count)]

    def client(index: int) -> None:
        with lab.stack(stack_node, timeout=15.0) as control:
            results[index] = control.connect(address, port, timeout=6.0, hold=hold)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(CLIENT_GAP)
    return threads, results


def kernel_listener(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    plan = lab.node(kernel)
    namespace, ifname = plan.namespace, plan.interfaces[0].name
    address, quiet = lab.address(kernel), quiet_address(session, 1)
    port = traceable_port()  # tcp_retransmit_synack is machine-wide: filtered on a port of this run's own
    session.say(f"Now Linux (h1, {address}) listens on port {port} with backlog {BACKLOG} and never "
                "accepts; the stack is the client side.")
    before = kernel_netstat(namespace)
    pcaps = capture_paths(session, "kernel-listener")
    with optional_kernel_trace(lab.name, (port,)) as (trace, unavailable), \
            capturing(lab, kernel, pcaps[0], bpf_filter=f"tcp port {port}"), \
            capturing(lab, stack_node, pcaps[1], wire_end(session), bpf_filter=f"tcp port {port}"), \
            lab.stack(stack_node) as control, \
            silent_neighbour(namespace, ifname, quiet):
        control.config(syn_retries=1)
        listener = listening_socket(namespace, (address, port), BACKLOG)
        started = time.monotonic()
        watcher = QueueWatcher(kernel_queues(namespace, port), started)
        try:
            watcher.start()
            send_syns(lab.node(stack_node).namespace, lab.node(stack_node).interfaces[0].name,
                      interface_mac(namespace, ifname), quiet, (address, port), [HALF_OPEN_PORT])
            session.say(f"A raw SYN from {quiet}:{HALF_OPEN_PORT}, an address h1 resolves to a MAC nobody "
                        "has: Linux queues the request and sends its SYN-ACK into the void.")
            time.sleep(CLIENTS_START)
            hold = LOOK_UNTIL - CLIENTS_START
            threads, results = stack_clients(session, address, port, CLIENTS, hold)
            time.sleep(max(0.0, LOOK_UNTIL - (time.monotonic() - started)))
            for thread in threads:
                thread.join(15.0)
            samples = watcher.finish()
        finally:
            watcher.finish()
            listener.close()
            control.config(syn_retries=TcpConfig().syn_retries)
        events = trace.events() if trace else []
    grew = counter_deltas(before, kernel_netstat(namespace), KERNEL_COUNTERS)
    outcomes = [connect_outcome(r) for r in results]
    synacks = [e for e in events if e.name == "tcp_retransmit_synack" and e.fields.get("daddr") == quiet]
    most = max((s.syn_queue for s in samples), default=0)
    session.say(f"Linux's SYN queue held up to {most} request socket (NEW_SYN_RECV in sock_diag); "
                + (f"tcp:tcp_retransmit_synack fired {len(synacks)} time(s) for it."
                   if trace else f"(tracepoints unavailable: {unavailable})"))
    session.say(f"Of {CLIENTS} stack clients: {outcomes}. /proc/net/netstat: ListenOverflows "
                f"+{grew['TcpExtListenOverflows']}, ListenDrops +{grew['TcpExtListenDrops']}.")
    session.metric("kernel_listener", {"samples": samples_json(samples), "outcomes": outcomes,
                                       "counters": grew, "synack_retransmissions": len(synacks),
                                       "watch_error": watcher.error})
    judge_queues(session, "kernel listener", samples, outcomes)
    if trace:
        session.check("kernel listener: the half-open request's SYN-ACK was retransmitted", len(synacks) >= 1,
                      f"{len(synacks)} tcp_retransmit_synack event(s) toward {quiet}")
    session.check("kernel listener: dropped SYNs counted as ListenOverflows",
                  grew["TcpExtListenOverflows"] >= 1,
                  f"ListenOverflows +{grew['TcpExtListenOverflows']}, "
                  f"ListenDrops +{grew['TcpExtListenDrops']}")


# ---------------------------------------------------------------------------------------------------
# Step 3: SYN cookies
# ---------------------------------------------------------------------------------------------------

def cookies(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    plan = lab.node(kernel)
    namespace, ifname = plan.namespace, plan.interfaces[0].name
    quiet_stack, quiet_kernel = quiet_address(session, 0), quiet_address(session, 1)
    session.say(f"A flood: {FLOOD} half-open SYNs to a fresh listener on each side (backlog {BACKLOG}). Once "
                "the SYN queue is full, the listener keeps no state for a new SYN: its SYN-ACK carries a "
                "cookie in the sequence number, and a client that answers it is let in.")
    # The stack's listener, flooded by kernel clients from an address whose answers vanish.
    with lab.stack(stack_node) as control, silent_address(namespace, ifname, quiet_stack):
        before = stack_counters(control)
        control.listen(STACK_COOKIE_PORT, app="none", backlog=BACKLOG, accept=False)
        flood: list[socket.socket] = []
        try:
            for _ in range(FLOOD):
                client = lab.kernel_socket(kernel)
                flood.append(client)
                client.bind((quiet_stack, 0))
                client.setblocking(False)
                client.connect_ex((lab.address(stack_node), STACK_COOKIE_PORT))
            time.sleep(0.2)
            syn_queue = stack_queues(control, STACK_COOKIE_PORT)()[0]
            ordinary = lab.kernel_socket(kernel)
            flood.append(ordinary)
            ordinary.settimeout(3.0)
            ordinary.connect((lab.address(stack_node), STACK_COOKIE_PORT))
            time.sleep(0.1)
            stack_grew = counter_deltas(before, stack_counters(control), STACK_COUNTERS)
        finally:
            for client in flood:
                client.close()
            control.close_listener(STACK_COOKIE_PORT)
    session.say(f"Stack: SYN queue {syn_queue} (= backlog), SyncookiesSent +{stack_grew['SyncookiesSent']}, "
                f"and an ordinary kernel client connected through a cookie (SyncookiesRecv "
                f"+{stack_grew['SyncookiesRecv']}).")
    session.check("stack listener: SYN cookies once the SYN queue is full",
                  stack_grew["SyncookiesSent"] >= 1 and stack_grew["SyncookiesRecv"] >= 1,
                  f"SYN queue {syn_queue}, SyncookiesSent +{stack_grew['SyncookiesSent']}, "
                  f"SyncookiesRecv +{stack_grew['SyncookiesRecv']}")
    # Linux's listener, flooded by raw SYNs.
    cookies_sysctl = read_sysctl(namespace, "net.ipv4.tcp_syncookies")
    before_kernel = kernel_netstat(namespace)
    address = lab.address(kernel)
    with lab.stack(stack_node) as control, silent_neighbour(namespace, ifname, quiet_kernel):
        listener = listening_socket(namespace, (address, KERNEL_COOKIE_PORT), BACKLOG)
        try:
            send_syns(lab.node(stack_node).namespace, lab.node(stack_node).interfaces[0].name,
                      interface_mac(namespace, ifname), quiet_kernel, (address, KERNEL_COOKIE_PORT),
                      range(HALF_OPEN_PORT + 1, HALF_OPEN_PORT + 1 + FLOOD))
            time.sleep(0.2)
            kernel_syn_queue = kernel_queues(namespace, KERNEL_COOKIE_PORT)()[0]
            answer = control.connect(address, KERNEL_COOKIE_PORT, timeout=3.0)
        finally:
            listener.close()
    kernel_grew = counter_deltas(before_kernel, kernel_netstat(namespace), KERNEL_COUNTERS)
    session.say(f"Linux (net.ipv4.tcp_syncookies = {cookies_sysctl}): SYN queue {kernel_syn_queue}, "
                f"TCPReqQFullDoCookies +{kernel_grew['TcpExtTCPReqQFullDoCookies']}, SyncookiesSent "
                f"+{kernel_grew['TcpExtSyncookiesSent']}; the stack client "
                f"{'connected' if not answer.get('error') else answer['error']} (SyncookiesRecv "
                f"+{kernel_grew['TcpExtSyncookiesRecv']}).")
    session.say(f"Where cookies start: Linux kept {kernel_syn_queue} requests in its SYN queue (backlog + 1, "
                f"as with the accept queue), the stack {syn_queue} (backlog): the stack's SYN queue is one "
                "entry shorter than Linux's.")
    session.metric("cookies", {"stack": {"syn_queue": syn_queue, **stack_grew},
                               "kernel": {"syn_queue": kernel_syn_queue, "tcp_syncookies": cookies_sysctl,
                                          **kernel_grew}})
    session.check("kernel listener: SYN cookies once the SYN queue is full",
                  kernel_grew["TcpExtSyncookiesSent"] >= 1 and not answer.get("error"),
                  f"SYN queue {kernel_syn_queue}, SyncookiesSent +{kernel_grew['TcpExtSyncookiesSent']}, "
                  f"SyncookiesRecv +{kernel_grew['TcpExtSyncookiesRecv']}, stack client "
                  f"{answer.get('error') or 'connected'}")


# ---------------------------------------------------------------------------------------------------
# Step 4: the picture
# ---------------------------------------------------------------------------------------------------

def plot(session: Session) -> None:
    sides = {}
    for key, title in (("stack_listener", "stack listener (s1), kernel clients"),
                       ("kernel_listener", "Linux listener (h1), stack clients")):
        seen = session.metrics.get(key, {}).get("samples", [])
        sides[title] = [QueueSample(t, int(syn), int(acc)) for t, syn, acc in seen]
    paths = queue_plot(sides, BACKLOG, session.path("queues"))
    publish(session, paths, "The SYN queue and the accept queue over time",
            f"backlog {BACKLOG}: one half-open client from 0 s, ordinary clients from {CLIENTS_START} s; "
            "the accept queue stops at backlog + 1 on both sides")
    session.say(f"Drawn: {', '.join(p.name for p in paths)}.")
    session.check("queue plots written", all(p.stat().st_size > 0 for p in paths),
                  ", ".join(f"{p.name} {p.stat().st_size} B" for p in paths))


STEPS = [
    Step("The stack listens and never accepts; kernel clients arrive", stack_listener),
    Step("Linux listens and never accepts; stack clients arrive", kernel_listener),
    Step("A SYN flood: SYN cookies on both sides", cookies),
    Step("Both listeners' queues over time", plot),
]
